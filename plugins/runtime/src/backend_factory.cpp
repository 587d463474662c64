// SPDX-License-Identifier: Apache-2.0
// Which backend opens a model file (Options::backend "auto"), and the model's own metadata into
// the Options.
#include "backend_factory.h"
#include "dtp/metadata.h"
#include "dtp/openvino_backend.h"

#include <algorithm>
#include <cctype>

namespace dtp
{
namespace
{

std::string suffixOf(std::string const& path)
{
    size_t const slash = path.find_last_of('/');
    size_t const dot = path.find_last_of('.');
    if (dot == std::string::npos || (slash != std::string::npos && dot < slash))
    {
        return {};
    }
    std::string suffix = path.substr(dot);
    std::transform(suffix.begin(), suffix.end(), suffix.begin(), [](unsigned char c) { return std::tolower(c); });
    return suffix;
}

bool isEngine(std::string const& suffix)
{
    return suffix == ".engine" || suffix == ".plan";
}

} // namespace

std::string backendForSuffix(std::string const& path)
{
    std::string const suffix = suffixOf(path);
    if (isEngine(suffix))
    {
        return "tensorrt";
    }
    if (suffix == ".onnx" || suffix == ".xml")
    {
        return "openvino";
    }
    throw Error("cannot tell the backend of " + path + " from its suffix '" + suffix + "'; name it *.onnx "
        "(OpenVINO) or *.engine / *.plan (TensorRT), or set Options::backend");
}

Options withModelMetadata(Backend const* backend, std::string const& path, Options options)
{
    if (backend == nullptr || !options.modelMetadata)
    {
        return options;
    }
    MetadataProps props = backend->modelMetadata();
    if (props.empty() && isEngine(suffixOf(path)))
    {
        props = readEngineSidecar(path);
    }
    applyMetadata(props, path, options);
    return options;
}

#ifndef DTP_WITH_OPENVINO
bool hasOpenVINO() noexcept
{
    return false;
}

std::string openvinoExtensionPath(Options const& /*options*/)
{
    return {};
}

std::unique_ptr<Backend> createOpenVINOBackend(std::string const& modelPath, Options const& /*options*/)
{
    throw Error("cannot open " + modelPath + ": this dtp runtime was built without OpenVINO; install it (pip install "
        "openvino) and rebuild with -DOpenVINO_DIR=$(python -c \"import openvino, pathlib; "
        "print(pathlib.Path(openvino.__file__).parent / 'cmake')\")");
}
#endif

} // namespace dtp
