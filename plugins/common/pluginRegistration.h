// SPDX-License-Identifier: Apache-2.0
//
// Entry points of the plugin library. TensorRT's IPluginRegistry::loadLibrary (and trtexec
// --dynamicPlugins) looks up the two extern "C" functions; applications that link the static
// library call dtp::registerPlugins with their registry instead.
#ifndef DTP_PLUGINS_COMMON_PLUGIN_REGISTRATION_H
#define DTP_PLUGINS_COMMON_PLUGIN_REGISTRATION_H

#include <NvInferRuntime.h>

#include <cstdint>

#define DTP_PLUGIN_EXPORT __attribute__((visibility("default")))

extern "C"
{
    //! Called by TensorRT right after loading the library, with the finder of its logger.
    DTP_PLUGIN_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder);

    //! All creators of the library (TokenSplit and TokenReconstruct, namespace "dtp", version "1").
    DTP_PLUGIN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
}

namespace dtp
{
//! Register both creators with `registry` (e.g. *getPluginRegistry()). Returns false if either was
//! refused (typically: already registered).
bool registerPlugins(nvinfer1::IPluginRegistry& registry) noexcept;
} // namespace dtp

#endif // DTP_PLUGINS_COMMON_PLUGIN_REGISTRATION_H
