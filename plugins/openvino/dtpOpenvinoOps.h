// SPDX-License-Identifier: Apache-2.0
// dtp::TokenSplit and dtp::TokenReconstruct as OpenVINO operations (opset name "dtp"), evaluated
// on the host by tokenOpsCpu. TokenSplit's kept width M is data-dependent: the output is declared
// [B, 0..N, C] and the evaluation sets the real shape.
#ifndef DTP_OPENVINO_OPS_H
#define DTP_OPENVINO_OPS_H

#include <openvino/op/op.hpp>

namespace dtp
{
namespace ov_ext
{

class TokenSplit : public ov::op::Op
{
public:
    OPENVINO_OP("TokenSplit", "dtp");

    // Input slots, as in the ONNX node and the TensorRT plugin.
    static constexpr size_t kTOKENS_IDX = 0;
    static constexpr size_t kCONFIDENCE_IDX = 1;
    static constexpr size_t kLABEL_IDX = 2;
    static constexpr size_t kINDEX_IDX = 3;

    TokenSplit() = default;
    TokenSplit(ov::OutputVector const& inputs, float threshold, int64_t contextTopk, int64_t numClasses);

    void validate_and_infer_types() override;
    std::shared_ptr<ov::Node> clone_with_new_inputs(ov::OutputVector const& newArgs) const override;
    bool visit_attributes(ov::AttributeVisitor& visitor) override;
    bool has_evaluate() const override;
    bool evaluate(ov::TensorVector& outputs, ov::TensorVector const& inputs) const override;

private:
    float mThreshold{0.0F};
    int64_t mContextTopk{0};
    int64_t mNumClasses{0};
};

class TokenReconstruct : public ov::op::Op
{
public:
    OPENVINO_OP("TokenReconstruct", "dtp");

    static constexpr size_t kBASE_IDX = 0;
    static constexpr size_t kUPDATES_IDX = 1;
    static constexpr size_t kINDEX_IDX = 2;

    TokenReconstruct() = default;
    explicit TokenReconstruct(ov::OutputVector const& inputs);

    void validate_and_infer_types() override;
    std::shared_ptr<ov::Node> clone_with_new_inputs(ov::OutputVector const& newArgs) const override;
    bool visit_attributes(ov::AttributeVisitor& visitor) override;
    bool has_evaluate() const override;
    bool evaluate(ov::TensorVector& outputs, ov::TensorVector const& inputs) const override;
};

} // namespace ov_ext
} // namespace dtp

#endif // DTP_OPENVINO_OPS_H
