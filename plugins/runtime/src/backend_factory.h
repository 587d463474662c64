// SPDX-License-Identifier: Apache-2.0
// Internal: the backend name for a model path (Options::backend "auto"), and the model's own
// metadata into the Options.
#ifndef DTP_RUNTIME_BACKEND_FACTORY_H
#define DTP_RUNTIME_BACKEND_FACTORY_H

#include "dtp/segmenter.h"

#include <string>

namespace dtp
{

//! "openvino" for .onnx / .xml, "tensorrt" for .engine / .plan; throws Error naming the suffix.
std::string backendForSuffix(std::string const& path);

//! options, with mean, std, patchSize, trainedSize and classNames replaced by the model's
//! metadata when options.modelMetadata is set: what the backend read from the model file, else
//! the sidecar of an engine (<engine>.json, as dtp-build writes it).
Options withModelMetadata(Backend const* backend, std::string const& path, Options options);

} // namespace dtp

#endif // DTP_RUNTIME_BACKEND_FACTORY_H
