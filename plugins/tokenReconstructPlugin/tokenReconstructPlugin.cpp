// SPDX-License-Identifier: Apache-2.0
#include "tokenReconstructPlugin/tokenReconstructPlugin.h"

#include "tokenReconstructPlugin/tokenReconstructKernel.h"

#include <string>

using namespace nvinfer1;

namespace dtp
{
namespace
{

constexpr char const* kWHO = TokenReconstructPlugin::kPLUGIN_NAME;

void checkCounts(int32_t nbInputs, int32_t nbOutputs)
{
    check(nbInputs == TokenReconstructPlugin::kNB_INPUTS && nbOutputs == TokenReconstructPlugin::kNB_OUTPUTS,
        std::string(kWHO) + ": expected 3 inputs and 1 output, got " + std::to_string(nbInputs) + " and "
            + std::to_string(nbOutputs));
}

} // namespace

TokenReconstructPlugin::TokenReconstructPlugin()
{
    mFields.refresh();
}

TokenReconstructPlugin::TokenReconstructPlugin(TokenReconstructPlugin const& other)
    : PluginBase(other)
{
    mFields.refresh();
}

std::unique_ptr<TokenReconstructPlugin> TokenReconstructPlugin::create(std::map<std::string, double> const& /*fields*/)
{
    return std::make_unique<TokenReconstructPlugin>();
}

// IPluginV3OneBuild

int32_t TokenReconstructPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    return guarded(kWHO, "getOutputDataTypes", -1, [&]() {
        checkCounts(nbInputs, nbOutputs);
        toTokenType(inputTypes[kBASE_IDX], kWHO);
        check(inputTypes[kUPDATES_IDX] == inputTypes[kBASE_IDX],
            std::string(kWHO) + ": updates must have the type of base (cast it in the graph)");
        check(inputTypes[kINDEX_IDX] == DataType::kINT32, std::string(kWHO) + ": index must be int32");
        outputTypes[kOUT_IDX] = inputTypes[kBASE_IDX];
        return 0;
    });
}

int32_t TokenReconstructPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& /*exprBuilder*/) noexcept
{
    return guarded(kWHO, "getOutputShapes", -1, [&]() {
        checkCounts(nbInputs, nbOutputs);
        check(inputs[kBASE_IDX].nbDims == 3 && inputs[kUPDATES_IDX].nbDims == 3 && inputs[kINDEX_IDX].nbDims == 2,
            std::string(kWHO) + ": expected base [B, N, D], updates [B, M, D], index [B, M]; got ranks "
                + std::to_string(inputs[kBASE_IDX].nbDims) + ", " + std::to_string(inputs[kUPDATES_IDX].nbDims) + ", "
                + std::to_string(inputs[kINDEX_IDX].nbDims));
        // The output is base's shape: M (possibly a size tensor) never reaches it.
        outputs[kOUT_IDX] = inputs[kBASE_IDX];
        return 0;
    });
}

bool TokenReconstructPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    return guarded(kWHO, "supportsFormatCombination", false, [&]() {
        checkCounts(nbInputs, nbOutputs);
        check(pos >= 0 && pos < nbInputs + nbOutputs, std::string(kWHO) + ": bad position " + std::to_string(pos));
        PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != TensorFormat::kLINEAR)
        {
            return false;
        }
        switch (pos)
        {
        case kBASE_IDX: return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
        case kUPDATES_IDX: return desc.type == inOut[kBASE_IDX].desc.type;
        case kINDEX_IDX: return desc.type == DataType::kINT32;
        case kNB_INPUTS + kOUT_IDX: return desc.type == inOut[kBASE_IDX].desc.type;
        }
        return false;
    });
}

int32_t TokenReconstructPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    return guarded(kWHO, "configurePlugin", -1, [&]() {
        checkCounts(nbInputs, nbOutputs);
        Dims const& base = in[kBASE_IDX].desc.dims;
        Dims const& updates = in[kUPDATES_IDX].desc.dims;
        Dims const& index = in[kINDEX_IDX].desc.dims;
        auto const same = [](int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; };
        check(same(base.d[0], updates.d[0]) && same(base.d[0], index.d[0]) && same(base.d[2], updates.d[2])
                && same(updates.d[1], index.d[1]),
            std::string(kWHO) + ": shapes do not match base [B, N, D], updates [B, M, D], index [B, M]");
        return 0;
    });
}

size_t TokenReconstructPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t nbOutputs) const noexcept
{
    return guarded(kWHO, "getWorkspaceSize", size_t{0}, [&]() {
        checkCounts(nbInputs, nbOutputs);
        // base is the full sequence (never a size tensor), so its max dims are known.
        Dims const& maxDims = inputs[kBASE_IDX].max;
        return tokenReconstructWorkspaceSize(
            toInt32Dim(maxDims.d[0], "max batch", kWHO), toInt32Dim(maxDims.d[1], "max N", kWHO));
    });
}

// IPluginV3OneRuntime

int32_t TokenReconstructPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    return guarded(kWHO, "enqueue", -1, [&]() {
        Dims const& base = inputDesc[kBASE_IDX].dims;
        TokenReconstructParams p;
        p.batch = toInt32Dim(base.d[0], "B", kWHO);
        p.numTokens = toInt32Dim(base.d[1], "N", kWHO);
        p.numUpdates = toInt32Dim(inputDesc[kUPDATES_IDX].dims.d[1], "M", kWHO);
        p.channels = toInt32Dim(base.d[2], "D", kWHO);
        p.tokenType = toTokenType(inputDesc[kBASE_IDX].type, kWHO);
        p.base = inputs[kBASE_IDX];
        p.updates = inputs[kUPDATES_IDX];
        p.index = static_cast<int32_t const*>(inputs[kINDEX_IDX]);
        p.out = outputs[kOUT_IDX];
        p.workspace = workspace;
        cudaError_t const status = tokenReconstruct(p, stream);
        check(status == cudaSuccess, std::string(kWHO) + ": kernel launch failed: " + cudaGetErrorString(status));
        return 0;
    });
}

} // namespace dtp
