// SPDX-License-Identifier: Apache-2.0
// The OpenVINO backend of the dtp runtime (CPU): ONNX models (.onnx) and OpenVINO IR (.xml).
// Plugin-flavour graphs run their dtp::TokenSplit / TokenReconstruct nodes through the native
// extension library built from plugins/openvino (libdtp_openvino_ops.so).
#ifndef DTP_RUNTIME_OPENVINO_BACKEND_H
#define DTP_RUNTIME_OPENVINO_BACKEND_H

#include "dtp/metadata.h"
#include "dtp/segmenter.h"

#include <memory>
#include <string>

namespace dtp
{

//! The extension library the OpenVINO backend loads: Options::pluginLibrary when set, else the
//! environment variable DTP_OPENVINO_EXTENSION, else the one built with this runtime (when it
//! exists). Empty: none.
std::string openvinoExtensionPath(Options const& options);

//! Read and compile modelPath on the CPU (f32, so labels equal the Python runtime's); the
//! backend's modelMetadata() gives the model's dtp.* metadata_props. Registered as backend
//! "openvino". Throws dtp::Error when the library was built without OpenVINO or the model
//! cannot be read.
std::unique_ptr<Backend> createOpenVINOBackend(std::string const& modelPath, Options const& options);

} // namespace dtp

#endif // DTP_RUNTIME_OPENVINO_BACKEND_H
