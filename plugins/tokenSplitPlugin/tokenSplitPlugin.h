// SPDX-License-Identifier: Apache-2.0
//
// dtp::TokenSplit v1 as an IPluginV3 (DESIGN.md sections 2 and 3). The kept-token count M is
// data-dependent: it is declared as a size tensor and written by the kernel. Its bound is the
// full sequence's token count (field `max_tokens`), never the input width: from the second
// split on, that width is itself a size tensor, which TensorRT refuses as a bound.
#ifndef DTP_PLUGINS_TOKEN_SPLIT_PLUGIN_H
#define DTP_PLUGINS_TOKEN_SPLIT_PLUGIN_H

#include "common/pluginBase.h"

#include <NvInferRuntime.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace dtp
{

class TokenSplitPlugin : public PluginBase<TokenSplitPlugin>
{
public:
    static constexpr char const* kPLUGIN_NAME = "TokenSplit";

    static constexpr int32_t kTOKENS_IDX = 0;
    static constexpr int32_t kCONFIDENCE_IDX = 1;
    static constexpr int32_t kLABEL_IDX = 2;
    static constexpr int32_t kINDEX_IDX = 3;
    static constexpr int32_t kNB_INPUTS = 4;

    static constexpr int32_t kKEPT_TOKENS_IDX = 0;
    static constexpr int32_t kKEPT_INDEX_IDX = 1;
    //! The size tensor holding M. Last, so that the two outputs of the ONNX node map to 0 and 1.
    static constexpr int32_t kKEPT_COUNT_IDX = 2;
    static constexpr int32_t kNB_OUTPUTS = 3;

    //! The creator's fields, in the order the ONNX parser will look them up on the node.
    static constexpr std::array<FieldSpec, 4> kFIELDS{{
        {"threshold", nvinfer1::PluginFieldType::kFLOAT32},
        {"context_topk", nvinfer1::PluginFieldType::kINT32},
        {"num_classes", nvinfer1::PluginFieldType::kINT32},
        {"max_tokens", nvinfer1::PluginFieldType::kINT32},
    }};

    //! maxTokens: the token count of the full sequence (the grid, plus DoViT's class token), the
    //! bound of N and M; 0 = unknown, buildable only where the input width is not a size tensor.
    TokenSplitPlugin(float threshold, int32_t contextTopk, int32_t numClasses, int32_t maxTokens);
    TokenSplitPlugin(TokenSplitPlugin const& other);

    //! From parsed fields (see kFIELDS); `threshold` is required, the rest default to 0.
    static std::unique_ptr<TokenSplitPlugin> create(std::map<std::string, double> const& fields);

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

private:
    void initFields();

    float mThreshold;
    int32_t mContextTopk;
    int32_t mNumClasses;
    int32_t mMaxTokens;
};

using TokenSplitPluginCreator = PluginCreatorBase<TokenSplitPlugin>;

} // namespace dtp

#endif // DTP_PLUGINS_TOKEN_SPLIT_PLUGIN_H
