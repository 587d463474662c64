// SPDX-License-Identifier: Apache-2.0
#include "tokenSplitPlugin/tokenSplitPlugin.h"

#include "tokenSplitPlugin/tokenSplitKernel.h"

#include <cmath>
#include <string>

using namespace nvinfer1;

namespace dtp
{
namespace
{

constexpr char const* kWHO = TokenSplitPlugin::kPLUGIN_NAME;

//! Bytes in front of the per-image counts inside the plugin workspace.
size_t countsOffset(int32_t batch, int32_t numTokens, int32_t numClasses) noexcept
{
    return alignUp(tokenSplitWorkspaceSize(batch, numTokens, numClasses));
}

void checkAttributes(float threshold, int32_t contextTopk, int32_t numClasses, int32_t maxTokens)
{
    check(!std::isnan(threshold), std::string(kWHO) + ": threshold is NaN");
    check(contextTopk >= 0, std::string(kWHO) + ": context_topk = " + std::to_string(contextTopk) + "; expected >= 0");
    check(numClasses >= 0, std::string(kWHO) + ": num_classes = " + std::to_string(numClasses) + "; expected >= 0");
    check(maxTokens >= 0,
        std::string(kWHO) + ": max_tokens = " + std::to_string(maxTokens) + "; expected >= 0 (0 = not given)");
    check(contextTopk == 0 || numClasses > 0,
        std::string(kWHO) + ": context_topk = " + std::to_string(contextTopk)
            + " needs num_classes > 0 (the kernel keeps per-class state)");
}

void checkCounts(int32_t nbInputs, int32_t nbOutputs)
{
    check(nbInputs == TokenSplitPlugin::kNB_INPUTS && nbOutputs == TokenSplitPlugin::kNB_OUTPUTS,
        std::string(kWHO) + ": expected 4 inputs and 3 outputs, got " + std::to_string(nbInputs) + " and "
            + std::to_string(nbOutputs));
}

IDimensionExpr const* checked(IDimensionExpr const* expr, char const* what)
{
    check(expr != nullptr, std::string(kWHO) + ": the expression builder refused " + what);
    return expr;
}

} // namespace

TokenSplitPlugin::TokenSplitPlugin(float threshold, int32_t contextTopk, int32_t numClasses, int32_t maxTokens)
    : mThreshold(threshold)
    , mContextTopk(contextTopk)
    , mNumClasses(numClasses)
    , mMaxTokens(maxTokens)
{
    checkAttributes(threshold, contextTopk, numClasses, maxTokens);
    initFields();
}

TokenSplitPlugin::TokenSplitPlugin(TokenSplitPlugin const& other)
    : PluginBase(other)
    , mThreshold(other.mThreshold)
    , mContextTopk(other.mContextTopk)
    , mNumClasses(other.mNumClasses)
    , mMaxTokens(other.mMaxTokens)
{
    initFields();
}

std::unique_ptr<TokenSplitPlugin> TokenSplitPlugin::create(std::map<std::string, double> const& fields)
{
    auto const get = [&](char const* name) {
        auto const it = fields.find(name);
        return it == fields.end() ? 0 : toInt32Field(it->second, name, kWHO);
    };
    auto const threshold = fields.find("threshold");
    check(threshold != fields.end(), std::string(kWHO) + ": missing required field 'threshold'");
    return std::make_unique<TokenSplitPlugin>(
        static_cast<float>(threshold->second), get("context_topk"), get("num_classes"), get("max_tokens"));
}

void TokenSplitPlugin::initFields()
{
    // Serialised in kFIELDS order, with kFIELDS types: the runtime phase reads them back through
    // the creator like any other field collection.
    mFields.fields.clear();
    mFields.fields.emplace_back(kFIELDS[0].name, &mThreshold, kFIELDS[0].type, 1);
    mFields.fields.emplace_back(kFIELDS[1].name, &mContextTopk, kFIELDS[1].type, 1);
    mFields.fields.emplace_back(kFIELDS[2].name, &mNumClasses, kFIELDS[2].type, 1);
    mFields.fields.emplace_back(kFIELDS[3].name, &mMaxTokens, kFIELDS[3].type, 1);
    mFields.refresh();
}

// IPluginV3OneBuild

int32_t TokenSplitPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    return guarded(kWHO, "getOutputDataTypes", -1, [&]() {
        checkCounts(nbInputs, nbOutputs);
        toTokenType(inputTypes[kTOKENS_IDX], kWHO); // refuses anything but float/half up front
        outputTypes[kKEPT_TOKENS_IDX] = inputTypes[kTOKENS_IDX];
        outputTypes[kKEPT_INDEX_IDX] = DataType::kINT32;
        // INT64 as in NVIDIA's sampleNonZeroPlugin, which ships and runs (DESIGN.md section 3).
        outputTypes[kKEPT_COUNT_IDX] = DataType::kINT64;
        return 0;
    });
}

int32_t TokenSplitPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    return guarded(kWHO, "getOutputShapes", -1, [&]() {
        checkCounts(nbInputs, nbOutputs);
        check(inputs[kTOKENS_IDX].nbDims == 3,
            std::string(kWHO) + ": tokens must be [B, N, C], got rank " + std::to_string(inputs[kTOKENS_IDX].nbDims));
        for (int32_t i : {kCONFIDENCE_IDX, kLABEL_IDX, kINDEX_IDX})
        {
            check(inputs[i].nbDims == 2, std::string(kWHO) + ": input " + std::to_string(i)
                    + " must be [B, N], got rank " + std::to_string(inputs[i].nbDims));
        }
        IDimensionExpr const* batch = inputs[kTOKENS_IDX].d[0];
        IDimensionExpr const* width = inputs[kTOKENS_IDX].d[1];
        // TensorRT: the size tensor's opt must not depend on a size tensor, and its upper bound
        // sizes the output buffers. From the second split on, the width N is the previous split's
        // size tensor, so the bound is the full sequence's token count, an attribute of the node.
        IDimensionExpr const* upper = nullptr;
        if (mMaxTokens > 0)
        {
            check(!width->isConstant() || width->getConstantValue() <= mMaxTokens,
                std::string(kWHO) + ": the input has " + std::to_string(width->getConstantValue())
                    + " tokens, more than max_tokens = " + std::to_string(mMaxTokens)
                    + "; re-export the graph at this input size");
            upper = checked(exprBuilder.constant(mMaxTokens), "constant(max_tokens)");
        }
        else
        {
            check(!width->isSizeTensor(),
                std::string(kWHO) + ": the input width is data-dependent (a split after a split) and the node has "
                    "no max_tokens attribute; re-export the graph with a fixed input size (dtp-export without "
                    "--dynamic-shape) so that the exporter writes it");
            upper = width;
        }
        // Optimisation point: half the tokens kept, roughly what the pruned stages see.
        IDimensionExpr const* opt = checked(
            exprBuilder.operation(DimensionOperation::kCEIL_DIV, *upper, *checked(exprBuilder.constant(2), "constant(2)")),
            "the opt expression ceil(bound / 2)");
        IDimensionExpr const* kept
            = checked(exprBuilder.declareSizeTensor(kKEPT_COUNT_IDX, *opt, *upper), "declareSizeTensor");

        outputs[kKEPT_TOKENS_IDX].nbDims = 3;
        outputs[kKEPT_TOKENS_IDX].d[0] = batch;
        outputs[kKEPT_TOKENS_IDX].d[1] = kept;
        outputs[kKEPT_TOKENS_IDX].d[2] = inputs[kTOKENS_IDX].d[2];
        outputs[kKEPT_INDEX_IDX].nbDims = 2;
        outputs[kKEPT_INDEX_IDX].d[0] = batch;
        outputs[kKEPT_INDEX_IDX].d[1] = kept;
        outputs[kKEPT_COUNT_IDX].nbDims = 0;
        return 0;
    });
}

bool TokenSplitPlugin::supportsFormatCombination(
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
        case kTOKENS_IDX: return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
        case kCONFIDENCE_IDX: return desc.type == DataType::kFLOAT;
        case kLABEL_IDX:
        case kINDEX_IDX: return desc.type == DataType::kINT32;
        case kNB_INPUTS + kKEPT_TOKENS_IDX: return desc.type == inOut[kTOKENS_IDX].desc.type;
        case kNB_INPUTS + kKEPT_INDEX_IDX: return desc.type == DataType::kINT32;
        case kNB_INPUTS + kKEPT_COUNT_IDX: return desc.type == DataType::kINT64;
        }
        return false;
    });
}

int32_t TokenSplitPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    return guarded(kWHO, "configurePlugin", -1, [&]() {
        checkCounts(nbInputs, nbOutputs);
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
    });
}

size_t TokenSplitPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t nbOutputs) const noexcept
{
    return guarded(kWHO, "getWorkspaceSize", size_t{0}, [&]() {
        checkCounts(nbInputs, nbOutputs);
        Dims const& maxDims = inputs[kTOKENS_IDX].max;
        int32_t const batch = toInt32Dim(maxDims.d[0], "max batch", kWHO);
        // The input's max width is unknown (-1) when it is a previous split's size tensor: the
        // same static bound as in getOutputShapes.
        int32_t const numTokens = mMaxTokens > 0 ? mMaxTokens : toInt32Dim(maxDims.d[1], "max N", kWHO);
        return countsOffset(batch, numTokens, mNumClasses) + alignUp(sizeof(int32_t) * static_cast<size_t>(batch));
    });
}

// IPluginV3OneRuntime

int32_t TokenSplitPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    return guarded(kWHO, "enqueue", -1, [&]() {
        Dims const& dims = inputDesc[kTOKENS_IDX].dims;
        TokenSplitParams p;
        p.batch = toInt32Dim(dims.d[0], "B", kWHO);
        p.numTokens = toInt32Dim(dims.d[1], "N", kWHO);
        p.channels = toInt32Dim(dims.d[2], "C", kWHO);
        check(mMaxTokens == 0 || p.numTokens <= mMaxTokens,
            std::string(kWHO) + ": N = " + std::to_string(p.numTokens) + " exceeds max_tokens = "
                + std::to_string(mMaxTokens) + " (the workspace and outputs are sized for it)");
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
    });
}

} // namespace dtp
