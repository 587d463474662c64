// SPDX-License-Identifier: Apache-2.0
#include "dtpOpenvinoOps.h"

#include "tokenOpsCpu.h"

#include <algorithm>
#include <string>

namespace dtp
{
namespace ov_ext
{
namespace
{

bool isTokenType(ov::element::Type const& type)
{
    return type == ov::element::f32 || type == ov::element::f16 || type == ov::element::dynamic;
}

bool isInt32(ov::element::Type const& type)
{
    return type == ov::element::i32 || type == ov::element::dynamic;
}

//! Rank check with a message naming the op, the input and what was expected.
void requireRank(ov::Node* node, size_t slot, char const* name, int64_t rank)
{
    ov::PartialShape const& shape = node->get_input_partial_shape(slot);
    NODE_VALIDATION_CHECK(node, shape.rank().compatible(rank), "input ", slot, " (", name, ") has shape ", shape,
        "; expected rank ", rank);
}

size_t rowBytes(ov::Tensor const& tensor)
{
    ov::Shape const& shape = tensor.get_shape();
    return shape.at(2) * tensor.get_element_type().size();
}

} // namespace

// ---- TokenSplit --------------------------------------------------------------------------------

TokenSplit::TokenSplit(ov::OutputVector const& inputs, float threshold, int64_t contextTopk, int64_t numClasses)
    : Op(inputs)
    , mThreshold(threshold)
    , mContextTopk(contextTopk)
    , mNumClasses(numClasses)
{
    constructor_validate_and_infer_types();
}

void TokenSplit::validate_and_infer_types()
{
    NODE_VALIDATION_CHECK(this, get_input_size() == 4, "expects 4 inputs (tokens, confidence, label, index), got ",
        get_input_size());
    NODE_VALIDATION_CHECK(this, mContextTopk >= 0, "context_topk = ", mContextTopk, "; expected >= 0");
    NODE_VALIDATION_CHECK(this, mNumClasses >= 0, "num_classes = ", mNumClasses, "; expected >= 0");
    NODE_VALIDATION_CHECK(this, mContextTopk == 0 || mNumClasses > 0, "context_topk = ", mContextTopk,
        " needs num_classes > 0");
    requireRank(this, kTOKENS_IDX, "tokens", 3);
    requireRank(this, kCONFIDENCE_IDX, "confidence", 2);
    requireRank(this, kLABEL_IDX, "label", 2);
    requireRank(this, kINDEX_IDX, "index", 2);
    ov::element::Type const tokenType = get_input_element_type(kTOKENS_IDX);
    NODE_VALIDATION_CHECK(this, isTokenType(tokenType), "tokens are ", tokenType, "; expected f32 or f16");
    ov::element::Type const confType = get_input_element_type(kCONFIDENCE_IDX);
    NODE_VALIDATION_CHECK(this, confType == ov::element::f32 || confType == ov::element::dynamic, "confidence is ",
        confType, "; expected f32");
    NODE_VALIDATION_CHECK(this, isInt32(get_input_element_type(kLABEL_IDX)), "label is ",
        get_input_element_type(kLABEL_IDX), "; expected i32");
    NODE_VALIDATION_CHECK(this, isInt32(get_input_element_type(kINDEX_IDX)), "index is ",
        get_input_element_type(kINDEX_IDX), "; expected i32");

    ov::PartialShape const& tokens = get_input_partial_shape(kTOKENS_IDX);
    ov::Dimension batch = ov::Dimension::dynamic();
    ov::Dimension channels = ov::Dimension::dynamic();
    ov::Dimension width = ov::Dimension::dynamic();
    if (tokens.rank().is_static())
    {
        batch = tokens[0];
        channels = tokens[2];
        // 0 <= M <= N: the bound lets the plugin size its buffers when N is known.
        width = tokens[1].is_static() ? ov::Dimension(0, tokens[1].get_length())
                                      : ov::Dimension(0, tokens[1].get_max_length());
    }
    set_output_type(0, tokenType, ov::PartialShape{batch, width, channels});
    set_output_type(1, ov::element::i32, ov::PartialShape{batch, width});
}

std::shared_ptr<ov::Node> TokenSplit::clone_with_new_inputs(ov::OutputVector const& newArgs) const
{
    check_new_args_count(this, newArgs);
    return std::make_shared<TokenSplit>(newArgs, mThreshold, mContextTopk, mNumClasses);
}

bool TokenSplit::visit_attributes(ov::AttributeVisitor& visitor)
{
    visitor.on_attribute("threshold", mThreshold);
    visitor.on_attribute("context_topk", mContextTopk);
    visitor.on_attribute("num_classes", mNumClasses);
    return true;
}

bool TokenSplit::has_evaluate() const
{
    return true;
}

bool TokenSplit::evaluate(ov::TensorVector& outputs, ov::TensorVector const& inputs) const
{
    ov::Tensor const& tokens = inputs[kTOKENS_IDX];
    ov::Shape const& shape = tokens.get_shape();
    int64_t const batch = static_cast<int64_t>(shape.at(0));
    int64_t const n = static_cast<int64_t>(shape.at(1));
    std::vector<uint8_t> keep;
    cpu::SplitParams const params{mThreshold, mContextTopk, mNumClasses};
    std::vector<int64_t> const counts = cpu::keepMask(inputs[kCONFIDENCE_IDX].data<float const>(),
        inputs[kLABEL_IDX].data<int32_t const>(), inputs[kINDEX_IDX].data<int32_t const>(), batch, n, params, keep);
    int64_t const m = counts.empty() ? 0 : *std::max_element(counts.begin(), counts.end());
    outputs[0].set_shape({shape[0], static_cast<size_t>(m), shape[2]});
    outputs[1].set_shape({shape[0], static_cast<size_t>(m)});
    cpu::compact(static_cast<uint8_t const*>(tokens.data()), inputs[kINDEX_IDX].data<int32_t const>(), keep, batch,
        n, rowBytes(tokens), m, static_cast<uint8_t*>(outputs[0].data()), outputs[1].data<int32_t>());
    return true;
}

// ---- TokenReconstruct --------------------------------------------------------------------------

TokenReconstruct::TokenReconstruct(ov::OutputVector const& inputs)
    : Op(inputs)
{
    constructor_validate_and_infer_types();
}

void TokenReconstruct::validate_and_infer_types()
{
    NODE_VALIDATION_CHECK(this, get_input_size() == 3, "expects 3 inputs (base, updates, index), got ",
        get_input_size());
    requireRank(this, kBASE_IDX, "base", 3);
    requireRank(this, kUPDATES_IDX, "updates", 3);
    requireRank(this, kINDEX_IDX, "index", 2);
    ov::element::Type const baseType = get_input_element_type(kBASE_IDX);
    NODE_VALIDATION_CHECK(this, isTokenType(baseType), "base is ", baseType, "; expected f32 or f16");
    ov::element::Type const updatesType = get_input_element_type(kUPDATES_IDX);
    NODE_VALIDATION_CHECK(this, updatesType.compatible(baseType), "updates are ", updatesType,
        "; expected the type of base (", baseType, ")");
    NODE_VALIDATION_CHECK(this, isInt32(get_input_element_type(kINDEX_IDX)), "index is ",
        get_input_element_type(kINDEX_IDX), "; expected i32");
    set_output_type(0, baseType, get_input_partial_shape(kBASE_IDX));
}

std::shared_ptr<ov::Node> TokenReconstruct::clone_with_new_inputs(ov::OutputVector const& newArgs) const
{
    check_new_args_count(this, newArgs);
    return std::make_shared<TokenReconstruct>(newArgs);
}

bool TokenReconstruct::visit_attributes(ov::AttributeVisitor& /*visitor*/)
{
    return true;
}

bool TokenReconstruct::has_evaluate() const
{
    return true;
}

bool TokenReconstruct::evaluate(ov::TensorVector& outputs, ov::TensorVector const& inputs) const
{
    ov::Tensor const& base = inputs[kBASE_IDX];
    ov::Tensor const& updates = inputs[kUPDATES_IDX];
    ov::Shape const& shape = base.get_shape();
    ov::Shape const& updateShape = updates.get_shape();
    if (updateShape.at(0) != shape.at(0) || updateShape.at(2) != shape.at(2)
        || inputs[kINDEX_IDX].get_shape() != ov::Shape{updateShape[0], updateShape[1]})
    {
        return false; // the shapes disagree: OpenVINO reports the failed evaluation
    }
    outputs[0].set_shape(shape);
    return cpu::reconstruct(static_cast<uint8_t const*>(base.data()), static_cast<uint8_t const*>(updates.data()),
        inputs[kINDEX_IDX].data<int32_t const>(), static_cast<int64_t>(shape[0]), static_cast<int64_t>(shape[1]),
        static_cast<int64_t>(updateShape[1]), rowBytes(base), static_cast<uint8_t*>(outputs[0].data()));
}

} // namespace ov_ext
} // namespace dtp
