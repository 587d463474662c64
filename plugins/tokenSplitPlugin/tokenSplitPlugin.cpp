// SPDX-License-Identifier: Apache-2.0
#include "tokenSplitPlugin/tokenSplitPlugin.h"

#include "tokenSplitPlugin/tokenSplitKernel.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <string>

using namespace nvinfer1;

namespace dtp
{
namespace
{

constexpr char const* kWHO = "TokenSplit";
constexpr char const* kFIELD_THRESHOLD = "threshold";
constexpr char const* kFIELD_CONTEXT_TOPK = "context_topk";
constexpr char const* kFIELD_NUM_CLASSES = "num_classes";

//! Bytes in front of the per-image counts inside the plugin workspace.
size_t countsOffset(int32_t batch, int32_t numTokens, int32_t numClasses) noexcept
{
    return alignUp(tokenSplitWorkspaceSize(batch, numTokens, numClasses));
}

void checkAttributes(float threshold, int32_t contextTopk, int32_t numClasses)
{
    check(!std::isnan(threshold), std::string(kWHO) + ": threshold is NaN");
    check(contextTopk >= 0, std::string(kWHO) + ": context_topk = " + std::to_string(contextTopk) + "; expected >= 0");
    check(numClasses >= 0, std::string(kWHO) + ": num_classes = " + std::to_string(numClasses) + "; expected >= 0");
    check(contextTopk == 0 || numClasses > 0,
        std::string(kWHO) + ": context_topk = " + std::to_string(contextTopk)
            + " needs num_classes > 0 (the kernel keeps per-class state)");
}

} // namespace

TokenSplitPlugin::TokenSplitPlugin(float threshold, int32_t contextTopk, int32_t numClasses)
    : mThreshold(threshold)
    , mContextTopk(contextTopk)
    , mNumClasses(numClasses)
{
    checkAttributes(threshold, contextTopk, numClasses);
    initFields();
}

TokenSplitPlugin::TokenSplitPlugin(TokenSplitPlugin const& other)
    : IPluginV3(other)
    , IPluginV3OneCore(other)
    , IPluginV3OneBuild(other)
    , IPluginV3OneRuntime(other)
    , mThreshold(other.mThreshold)
    , mContextTopk(other.mContextTopk)
    , mNumClasses(other.mNumClasses)
{
    // The field records point at members: they must point at this copy's, not the original's.
    initFields();
}

void TokenSplitPlugin::initFields()
{
    mFields.fields.clear();
    mFields.fields.emplace_back(kFIELD_THRESHOLD, &mThreshold, PluginFieldType::kFLOAT32, 1);
    mFields.fields.emplace_back(kFIELD_CONTEXT_TOPK, &mContextTopk, PluginFieldType::kINT32, 1);
    mFields.fields.emplace_back(kFIELD_NUM_CLASSES, &mNumClasses, PluginFieldType::kINT32, 1);
    mFields.refresh();
}

// IPluginV3

IPluginCapability* TokenSplitPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
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
        logError("TokenSplit::getCapabilityInterface", e);
    }
    catch (...)
    {
        logUnknownError("TokenSplit::getCapabilityInterface");
    }
    return nullptr;
}

IPluginV3* TokenSplitPlugin::clone() noexcept
{
    try
    {
        return std::make_unique<TokenSplitPlugin>(*this).release();
    }
    catch (std::exception const& e)
    {
        logError("TokenSplit::clone", e);
    }
    catch (...)
    {
        logUnknownError("TokenSplit::clone");
    }
    return nullptr;
}

// IPluginV3OneCore

char const* TokenSplitPlugin::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* TokenSplitPlugin::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* TokenSplitPlugin::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

// IPluginV3OneBuild

int32_t TokenSplitPlugin::getNbOutputs() const noexcept
{
    return kNB_OUTPUTS;
}

int32_t TokenSplitPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        check(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS,
            std::string(kWHO) + ": expected 4 inputs and 3 outputs, got " + std::to_string(nbInputs) + " and "
                + std::to_string(nbOutputs));
        toTokenType(inputTypes[kTOKENS_IDX], kWHO); // refuses anything but float/half up front
        outputTypes[kKEPT_TOKENS_IDX] = inputTypes[kTOKENS_IDX];
        outputTypes[kKEPT_INDEX_IDX] = DataType::kINT32;
        outputTypes[kKEPT_COUNT_IDX] = DataType::kINT64; // size tensors are INT64 scalars
        return 0;
    }
    catch (std::exception const& e)
    {
        logError("TokenSplit::getOutputDataTypes", e);
    }
    catch (...)
    {
        logUnknownError("TokenSplit::getOutputDataTypes");
    }
    return -1;
}

int32_t TokenSplitPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    try
    {
        check(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS, std::string(kWHO) + ": expected 4 inputs and 3 outputs");
        check(inputs[kTOKENS_IDX].nbDims == 3,
            std::string(kWHO) + ": tokens must be [B, N, C], got rank " + std::to_string(inputs[kTOKENS_IDX].nbDims));
        for (int32_t i : {kCONFIDENCE_IDX, kLABEL_IDX, kINDEX_IDX})
        {
            check(inputs[i].nbDims == 2, std::string(kWHO) + ": input " + std::to_string(i) + " must be [B, N], got rank "
                    + std::to_string(inputs[i].nbDims));
        }
        IDimensionExpr const* batch = inputs[kTOKENS_IDX].d[0];
        IDimensionExpr const* upper = inputs[kTOKENS_IDX].d[1];
        // Optimisation point: half the tokens kept, roughly what the pruned stages see.
        IDimensionExpr const* opt = exprBuilder.operation(DimensionOperation::kCEIL_DIV, *upper, *exprBuilder.constant(2));
        IDimensionExpr const* kept = exprBuilder.declareSizeTensor(kKEPT_COUNT_IDX, *opt, *upper);
        check(kept != nullptr, std::string(kWHO) + ": declareSizeTensor failed");

        outputs[kKEPT_TOKENS_IDX].nbDims = 3;
        outputs[kKEPT_TOKENS_IDX].d[0] = batch;
        outputs[kKEPT_TOKENS_IDX].d[1] = kept;
        outputs[kKEPT_TOKENS_IDX].d[2] = inputs[kTOKENS_IDX].d[2];
        outputs[kKEPT_INDEX_IDX].nbDims = 2;
        outputs[kKEPT_INDEX_IDX].d[0] = batch;
        outputs[kKEPT_INDEX_IDX].d[1] = kept;
        outputs[kKEPT_COUNT_IDX].nbDims = 0;
        return 0;
    }
    catch (std::exception const& e)
    {
        logError("TokenSplit::getOutputShapes", e);
    }
    catch (...)
    {
        logUnknownError("TokenSplit::getOutputShapes");
    }
    return -1;
}

bool TokenSplitPlugin::supportsFormatCombination(
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
        case kTOKENS_IDX: return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
        case kCONFIDENCE_IDX: return desc.type == DataType::kFLOAT;
        case kLABEL_IDX:
        case kINDEX_IDX: return desc.type == DataType::kINT32;
        case kNB_INPUTS + kKEPT_TOKENS_IDX: return desc.type == inOut[kTOKENS_IDX].desc.type;
        case kNB_INPUTS + kKEPT_INDEX_IDX: return desc.type == DataType::kINT32;
        case kNB_INPUTS + kKEPT_COUNT_IDX: return desc.type == DataType::kINT64;
        }
        return false;
    }
    catch (std::exception const& e)
    {
        logError("TokenSplit::supportsFormatCombination", e);
    }
    catch (...)
    {
        logUnknownError("TokenSplit::supportsFormatCombination");
    }
    return false;
}

int32_t TokenSplitPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        check(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS, std::string(kWHO) + ": expected 4 inputs and 3 outputs");
        // Where both are known at build time, [B, N] of the per-token inputs must match the tokens.
        Dims const& tokens = in[kTOKENS_IDX].desc.dims;
        for (int32_t i : {kCONFIDENCE_IDX, kLABEL_IDX, kINDEX_IDX})
        {
            Dims const& d = in[i].desc.dims;
            for (int32_t k = 0; k < 2; ++k)
            {
                check(d.d[k] < 0 || tokens.d[k] < 0 || d.d[k] == tokens.d[k],
                    std::string(kWHO) + ": input " + std::to_string(i) + " dim " + std::to_string(k) + " is "
                        + std::to_string(d.d[k]) + " but tokens have " + std::to_string(tokens.d[k]));
            }
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logError("TokenSplit::configurePlugin", e);
    }
    catch (...)
    {
        logUnknownError("TokenSplit::configurePlugin");
    }
    return -1;
}

size_t TokenSplitPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    try
    {
        Dims const& maxDims = inputs[kTOKENS_IDX].max;
        int32_t const batch = toInt32Dim(maxDims.d[0], "max batch", kWHO);
        int32_t const numTokens = toInt32Dim(maxDims.d[1], "max N", kWHO);
        return countsOffset(batch, numTokens, mNumClasses) + alignUp(sizeof(int32_t) * static_cast<size_t>(batch));
    }
    catch (std::exception const& e)
    {
        logError("TokenSplit::getWorkspaceSize", e);
    }
    catch (...)
    {
        logUnknownError("TokenSplit::getWorkspaceSize");
    }
    return 0;
}

// IPluginV3OneRuntime

int32_t TokenSplitPlugin::onShapeChange(
    PluginTensorDesc const* /*in*/, int32_t /*nbInputs*/, PluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) noexcept
{
    return 0;
}

int32_t TokenSplitPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
        Dims const& dims = inputDesc[kTOKENS_IDX].dims;
        TokenSplitParams p;
        p.batch = toInt32Dim(dims.d[0], "B", kWHO);
        p.numTokens = toInt32Dim(dims.d[1], "N", kWHO);
        p.channels = toInt32Dim(dims.d[2], "C", kWHO);
        p.tokenType = toTokenType(inputDesc[kTOKENS_IDX].type, kWHO);
        p.threshold = mThreshold;
        p.contextTopk = mContextTopk;
        p.numClasses = mNumClasses;
        // TensorRT reads a [B, M, C] tensor whose M is the size tensor: the dense layout.
        p.layout = TokenSplitLayout::kPACKED;
        p.tokens = inputs[kTOKENS_IDX];
        p.confidence = static_cast<float const*>(inputs[kCONFIDENCE_IDX]);
        p.label = static_cast<int32_t const*>(inputs[kLABEL_IDX]);
        p.index = static_cast<int32_t const*>(inputs[kINDEX_IDX]);
        p.keptTokens = outputs[kKEPT_TOKENS_IDX];
        p.keptIndex = static_cast<int32_t*>(outputs[kKEPT_INDEX_IDX]);
        p.maxCount = static_cast<int64_t*>(outputs[kKEPT_COUNT_IDX]);
        p.workspace = workspace;
        p.counts = reinterpret_cast<int32_t*>(
            static_cast<unsigned char*>(workspace) + countsOffset(p.batch, p.numTokens, mNumClasses));
        cudaError_t const status = tokenSplit(p, stream);
        check(status == cudaSuccess, std::string(kWHO) + ": kernel launch failed: " + cudaGetErrorString(status));
        return 0;
    }
    catch (std::exception const& e)
    {
        logError("TokenSplit::enqueue", e);
    }
    catch (...)
    {
        logUnknownError("TokenSplit::enqueue");
    }
    return -1;
}

IPluginV3* TokenSplitPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* TokenSplitPlugin::getFieldsToSerialize() noexcept
{
    return &mFields.collection;
}

// Creator

TokenSplitPluginCreator::TokenSplitPluginCreator()
{
    mFieldNames.fields.emplace_back(kFIELD_THRESHOLD, nullptr, PluginFieldType::kFLOAT32, 1);
    mFieldNames.fields.emplace_back(kFIELD_CONTEXT_TOPK, nullptr, PluginFieldType::kINT32, 1);
    mFieldNames.fields.emplace_back(kFIELD_NUM_CLASSES, nullptr, PluginFieldType::kINT32, 1);
    mFieldNames.refresh();
}

char const* TokenSplitPluginCreator::getPluginName() const noexcept
{
    return TokenSplitPlugin::kPLUGIN_NAME;
}

char const* TokenSplitPluginCreator::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* TokenSplitPluginCreator::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

PluginFieldCollection const* TokenSplitPluginCreator::getFieldNames() noexcept
{
    return &mFieldNames.collection;
}

IPluginV3* TokenSplitPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        check(fc != nullptr, std::string(kWHO) + ": no plugin fields given");
        bool hasThreshold = false;
        double threshold = 0.0;
        double contextTopk = 0.0;
        double numClasses = 0.0;
        for (int32_t i = 0; i < fc->nbFields; ++i)
        {
            PluginField const& field = fc->fields[i];
            check(field.name != nullptr, std::string(kWHO) + ": unnamed plugin field");
            if (std::strcmp(field.name, kFIELD_THRESHOLD) == 0)
            {
                threshold = readNumericField(field, kWHO);
                hasThreshold = true;
            }
            else if (std::strcmp(field.name, kFIELD_CONTEXT_TOPK) == 0)
            {
                contextTopk = readNumericField(field, kWHO);
            }
            else if (std::strcmp(field.name, kFIELD_NUM_CLASSES) == 0)
            {
                numClasses = readNumericField(field, kWHO);
            }
            else if (!isParserStringField(field))
            {
                throw PluginError(std::string(kWHO) + ": unknown field '" + field.name
                    + "'; expected threshold, context_topk, num_classes");
            }
        }
        check(hasThreshold, std::string(kWHO) + ": missing required field 'threshold'");
        check(contextTopk == std::floor(contextTopk) && numClasses == std::floor(numClasses) && contextTopk < 2147483648.0
                && numClasses < 2147483648.0,
            std::string(kWHO) + ": context_topk and num_classes must be int32 values");
        return std::make_unique<TokenSplitPlugin>(
            static_cast<float>(threshold), static_cast<int32_t>(contextTopk), static_cast<int32_t>(numClasses))
            .release();
    }
    catch (std::exception const& e)
    {
        logError("TokenSplitCreator::createPlugin", e);
    }
    catch (...)
    {
        logUnknownError("TokenSplitCreator::createPlugin");
    }
    return nullptr;
}

} // namespace dtp
