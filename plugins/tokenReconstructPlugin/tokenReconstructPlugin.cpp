// SPDX-License-Identifier: Apache-2.0
#include "tokenReconstructPlugin/tokenReconstructPlugin.h"

#include "tokenReconstructPlugin/tokenReconstructKernel.h"

#include <memory>
#include <string>

using namespace nvinfer1;

namespace dtp
{
namespace
{
constexpr char const* kWHO = "TokenReconstruct";
} // namespace

TokenReconstructPlugin::TokenReconstructPlugin()
{
    mFields.refresh();
}

TokenReconstructPlugin::TokenReconstructPlugin(TokenReconstructPlugin const& other)
    : IPluginV3(other)
    , IPluginV3OneCore(other)
    , IPluginV3OneBuild(other)
    , IPluginV3OneRuntime(other)
{
    mFields.refresh();
}

// IPluginV3

IPluginCapability* TokenReconstructPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    try
    {
        switch (type)
        {
        case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        throw PluginError(std::string(kWHO) + ": unknown capability " + std::to_string(static_cast<int32_t>(type)));
    }
    catch (std::exception const& e)
    {
        logError("TokenReconstruct::getCapabilityInterface", e);
    }
    catch (...)
    {
        logUnknownError("TokenReconstruct::getCapabilityInterface");
    }
    return nullptr;
}

IPluginV3* TokenReconstructPlugin::clone() noexcept
{
    try
    {
        return std::make_unique<TokenReconstructPlugin>(*this).release();
    }
    catch (std::exception const& e)
    {
        logError("TokenReconstruct::clone", e);
    }
    catch (...)
    {
        logUnknownError("TokenReconstruct::clone");
    }
    return nullptr;
}

// IPluginV3OneCore

char const* TokenReconstructPlugin::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* TokenReconstructPlugin::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* TokenReconstructPlugin::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

// IPluginV3OneBuild

int32_t TokenReconstructPlugin::getNbOutputs() const noexcept
{
    return kNB_OUTPUTS;
}

int32_t TokenReconstructPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        check(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS,
            std::string(kWHO) + ": expected 3 inputs and 1 output, got " + std::to_string(nbInputs) + " and "
                + std::to_string(nbOutputs));
        toTokenType(inputTypes[kBASE_IDX], kWHO);
        check(inputTypes[kUPDATES_IDX] == inputTypes[kBASE_IDX],
            std::string(kWHO) + ": updates must have the type of base (cast it in the graph)");
        outputTypes[kOUT_IDX] = inputTypes[kBASE_IDX];
        return 0;
    }
    catch (std::exception const& e)
    {
        logError("TokenReconstruct::getOutputDataTypes", e);
    }
    catch (...)
    {
        logUnknownError("TokenReconstruct::getOutputDataTypes");
    }
    return -1;
}

int32_t TokenReconstructPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& /*exprBuilder*/) noexcept
{
    try
    {
        check(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS, std::string(kWHO) + ": expected 3 inputs and 1 output");
        check(inputs[kBASE_IDX].nbDims == 3 && inputs[kUPDATES_IDX].nbDims == 3 && inputs[kINDEX_IDX].nbDims == 2,
            std::string(kWHO) + ": expected base [B, N, D], updates [B, M, D], index [B, M]; got ranks "
                + std::to_string(inputs[kBASE_IDX].nbDims) + ", " + std::to_string(inputs[kUPDATES_IDX].nbDims) + ", "
                + std::to_string(inputs[kINDEX_IDX].nbDims));
        outputs[kOUT_IDX] = inputs[kBASE_IDX];
        return 0;
    }
    catch (std::exception const& e)
    {
        logError("TokenReconstruct::getOutputShapes", e);
    }
    catch (...)
    {
        logUnknownError("TokenReconstruct::getOutputShapes");
    }
    return -1;
}

bool TokenReconstructPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    try
    {
        check(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS && pos >= 0 && pos < nbInputs + nbOutputs,
            std::string(kWHO) + ": bad position " + std::to_string(pos));
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
    }
    catch (std::exception const& e)
    {
        logError("TokenReconstruct::supportsFormatCombination", e);
    }
    catch (...)
    {
        logUnknownError("TokenReconstruct::supportsFormatCombination");
    }
    return false;
}

int32_t TokenReconstructPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        check(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS, std::string(kWHO) + ": expected 3 inputs and 1 output");
        Dims const& base = in[kBASE_IDX].desc.dims;
        Dims const& updates = in[kUPDATES_IDX].desc.dims;
        Dims const& index = in[kINDEX_IDX].desc.dims;
        auto const same = [](int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; };
        check(same(base.d[0], updates.d[0]) && same(base.d[0], index.d[0]) && same(base.d[2], updates.d[2])
                && same(updates.d[1], index.d[1]),
            std::string(kWHO) + ": shapes do not match base [B, N, D], updates [B, M, D], index [B, M]");
        return 0;
    }
    catch (std::exception const& e)
    {
        logError("TokenReconstruct::configurePlugin", e);
    }
    catch (...)
    {
        logUnknownError("TokenReconstruct::configurePlugin");
    }
    return -1;
}

size_t TokenReconstructPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    try
    {
        Dims const& maxDims = inputs[kBASE_IDX].max;
        return tokenReconstructWorkspaceSize(
            toInt32Dim(maxDims.d[0], "max batch", kWHO), toInt32Dim(maxDims.d[1], "max N", kWHO));
    }
    catch (std::exception const& e)
    {
        logError("TokenReconstruct::getWorkspaceSize", e);
    }
    catch (...)
    {
        logUnknownError("TokenReconstruct::getWorkspaceSize");
    }
    return 0;
}

// IPluginV3OneRuntime

int32_t TokenReconstructPlugin::onShapeChange(
    PluginTensorDesc const* /*in*/, int32_t /*nbInputs*/, PluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) noexcept
{
    return 0;
}

int32_t TokenReconstructPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
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
    }
    catch (std::exception const& e)
    {
        logError("TokenReconstruct::enqueue", e);
    }
    catch (...)
    {
        logUnknownError("TokenReconstruct::enqueue");
    }
    return -1;
}

IPluginV3* TokenReconstructPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* TokenReconstructPlugin::getFieldsToSerialize() noexcept
{
    return &mFields.collection;
}

// Creator

TokenReconstructPluginCreator::TokenReconstructPluginCreator()
{
    mFieldNames.refresh();
}

char const* TokenReconstructPluginCreator::getPluginName() const noexcept
{
    return TokenReconstructPlugin::kPLUGIN_NAME;
}

char const* TokenReconstructPluginCreator::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* TokenReconstructPluginCreator::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

PluginFieldCollection const* TokenReconstructPluginCreator::getFieldNames() noexcept
{
    return &mFieldNames.collection;
}

IPluginV3* TokenReconstructPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            PluginField const& field = fc->fields[i];
            check(field.name != nullptr, std::string(kWHO) + ": unnamed plugin field");
            check(isParserStringField(field),
                std::string(kWHO) + ": unknown field '" + field.name + "'; the op has no attributes");
        }
        return std::make_unique<TokenReconstructPlugin>().release();
    }
    catch (std::exception const& e)
    {
        logError("TokenReconstructCreator::createPlugin", e);
    }
    catch (...)
    {
        logUnknownError("TokenReconstructCreator::createPlugin");
    }
    return nullptr;
}

} // namespace dtp
