// SPDX-License-Identifier: Apache-2.0
//
// dtp::TokenReconstruct v1 as an IPluginV3 (DESIGN.md sections 2 and 3): rows of `updates` written
// back into a copy of `base` at `index`. M (rows of updates) may be a data-dependent dimension.
#ifndef DTP_PLUGINS_TOKEN_RECONSTRUCT_PLUGIN_H
#define DTP_PLUGINS_TOKEN_RECONSTRUCT_PLUGIN_H

#include "common/pluginBase.h"

#include <NvInferRuntime.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace dtp
{

class TokenReconstructPlugin : public PluginBase<TokenReconstructPlugin>
{
public:
    static constexpr char const* kPLUGIN_NAME = "TokenReconstruct";

    static constexpr int32_t kBASE_IDX = 0;
    static constexpr int32_t kUPDATES_IDX = 1;
    static constexpr int32_t kINDEX_IDX = 2;
    static constexpr int32_t kNB_INPUTS = 3;

    static constexpr int32_t kOUT_IDX = 0;
    static constexpr int32_t kNB_OUTPUTS = 1;

    static constexpr std::array<FieldSpec, 0> kFIELDS{}; //!< the op has no attributes

    TokenReconstructPlugin();
    TokenReconstructPlugin(TokenReconstructPlugin const& other);

    static std::unique_ptr<TokenReconstructPlugin> create(std::map<std::string, double> const& fields);

    // IPluginV3OneBuild
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

using TokenReconstructPluginCreator = PluginCreatorBase<TokenReconstructPlugin>;

} // namespace dtp

#endif // DTP_PLUGINS_TOKEN_RECONSTRUCT_PLUGIN_H
