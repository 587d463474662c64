// SPDX-License-Identifier: Apache-2.0
// The OpenVINO extension library: the two ops (for IR and for nodes made in code) and their ONNX
// frontend conversions from domain "dtp". Attributes are read as the TensorRT plugin creators
// read their fields: threshold (required), context_topk and num_classes (default 0); any other
// attribute (plugin_namespace, plugin_version, or one a newer exporter adds) is ignored.
//
//   C++:    core.add_extension("libdtp_openvino_ops.so");
//   Python: openvino.Core().add_extension("libdtp_openvino_ops.so")
#include "dtpOpenvinoOps.h"

#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/frontend/onnx/extension/conversion.hpp>
#include <openvino/frontend/onnx/node_context.hpp>

namespace
{

constexpr char const* kDOMAIN = "dtp";

ov::OutputVector inputsOf(ov::frontend::NodeContext const& node)
{
    ov::OutputVector inputs;
    for (size_t i = 0; i < node.get_input_size(); ++i)
    {
        inputs.push_back(node.get_input(static_cast<int>(i)));
    }
    return inputs;
}

ov::OutputVector convertTokenSplit(ov::frontend::NodeContext const& node)
{
    FRONT_END_GENERAL_CHECK(node.has_attribute("threshold"),
        "dtp::TokenSplit: attribute 'threshold' is missing; re-export the model with dtp-export");
    auto split = std::make_shared<dtp::ov_ext::TokenSplit>(inputsOf(node), node.get_attribute<float>("threshold"),
        node.get_attribute<int64_t>("context_topk", 0), node.get_attribute<int64_t>("num_classes", 0));
    return split->outputs();
}

ov::OutputVector convertTokenReconstruct(ov::frontend::NodeContext const& node)
{
    return std::make_shared<dtp::ov_ext::TokenReconstruct>(inputsOf(node))->outputs();
}

} // namespace

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>({
    std::make_shared<ov::OpExtension<dtp::ov_ext::TokenSplit>>(),
    std::make_shared<ov::OpExtension<dtp::ov_ext::TokenReconstruct>>(),
    std::make_shared<ov::frontend::onnx::ConversionExtension>("TokenSplit", kDOMAIN, convertTokenSplit),
    std::make_shared<ov::frontend::onnx::ConversionExtension>("TokenReconstruct", kDOMAIN, convertTokenReconstruct),
}));
