// SPDX-License-Identifier: Apache-2.0
//
// TensorRT-side helpers shared by the dtp plugins: logging through the logger TensorRT hands the
// library, plugin-field parsing and type checks. Compiled only when TensorRT headers are found.
#ifndef DTP_PLUGINS_COMMON_PLUGIN_UTILS_H
#define DTP_PLUGINS_COMMON_PLUGIN_UTILS_H

#include "common/dtpCommon.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace dtp
{

//! Namespace and version under which both plugins are registered (DESIGN.md section 3).
constexpr char const* kPLUGIN_NAMESPACE = "dtp";
constexpr char const* kPLUGIN_VERSION = "1";

//! Error thrown inside plugin methods; every noexcept entry point catches it and logs it.
class PluginError : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! Log through TensorRT's logger (the one of the current engine/builder) or stderr without one.
void logMessage(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;

inline void logError(std::string const& where, std::exception const& e) noexcept
{
    logMessage(nvinfer1::ILogger::Severity::kERROR, where + ": " + e.what());
}

inline void logUnknownError(std::string const& where) noexcept
{
    logMessage(nvinfer1::ILogger::Severity::kERROR, where + ": unknown exception");
}

//! Throw a PluginError naming the plugin and the failed condition.
inline void check(bool condition, std::string const& message)
{
    if (!condition)
    {
        throw PluginError(message);
    }
}

//! Field value as a number, whatever numeric type the producer chose (the ONNX parser passes INT
//! attributes as kINT32 and FLOAT as kFLOAT32, but hand-built networks may use 64-bit types).
double readNumericField(nvinfer1::PluginField const& field, std::string const& plugin);

//! True for the string fields the ONNX parser forwards from the node's attributes.
bool isParserStringField(nvinfer1::PluginField const& field) noexcept;

//! Token element type, or a PluginError naming the unsupported TensorRT type.
TokenType toTokenType(nvinfer1::DataType type, std::string const& plugin);

//! Dimension as int32, or a PluginError if it does not fit (the kernels index with int32).
int32_t toInt32Dim(int64_t value, char const* what, std::string const& plugin);

//! PluginFieldCollection over a vector that the owner keeps alive.
struct FieldCollection
{
    std::vector<nvinfer1::PluginField> fields;
    nvinfer1::PluginFieldCollection collection{};

    void refresh() noexcept
    {
        collection.nbFields = static_cast<int32_t>(fields.size());
        collection.fields = fields.empty() ? nullptr : fields.data();
    }
};

} // namespace dtp

#endif // DTP_PLUGINS_COMMON_PLUGIN_UTILS_H
