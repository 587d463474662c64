// SPDX-License-Identifier: Apache-2.0
//
// TensorRT-side helpers shared by the dtp plugins: logging through the logger TensorRT hands the
// library, plugin-field parsing and type checks. Compiled only when TensorRT headers are found.
#ifndef DTP_PLUGINS_COMMON_PLUGIN_UTILS_H
#define DTP_PLUGINS_COMMON_PLUGIN_UTILS_H

#include "common/dtpCommon.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <map>
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

//! Throw a PluginError naming the plugin and the failed condition.
inline void check(bool condition, std::string const& message)
{
    if (!condition)
    {
        throw PluginError(message);
    }
}

//! Run `body` inside a noexcept TensorRT entry point: a thrown error is logged as coming from
//! `plugin::method` and `onError` is returned instead (TensorRT reports failure through return
//! values; an exception must never cross into TensorRT).
template <typename Result, typename Body>
Result guarded(char const* plugin, char const* method, Result onError, Body&& body) noexcept
{
    try
    {
        return body();
    }
    catch (std::exception const& e)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, std::string(plugin) + "::" + method + ": " + e.what());
    }
    catch (...)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, std::string(plugin) + "::" + method + ": unknown exception");
    }
    return onError;
}

//! A plugin field the creator declares (the ONNX parser looks these names up on the node).
struct FieldSpec
{
    char const* name;
    nvinfer1::PluginFieldType type;
};

//! Field value as a number, whatever numeric type the producer chose (the ONNX parser passes INT
//! attributes as kINT32 and FLOAT as kFLOAT32, but hand-built networks may use 64-bit types).
double readNumericField(nvinfer1::PluginField const& field, std::string const& plugin);

//! True for the string fields a network builder may forward from the node's attributes. TensorRT's
//! ONNX parser consumes them itself (it passes only the creator's declared fields), but other
//! producers pass every attribute.
bool isParserStringField(nvinfer1::PluginField const& field) noexcept;

//! The numeric fields of `fc` by name. A field not in `known` (other than the parser's string
//! fields) is an error naming the expected ones; a missing field is simply absent from the map
//! (the ONNX parser skips attributes a node does not have).
std::map<std::string, double> readNumericFields(
    nvinfer1::PluginFieldCollection const* fc, std::vector<std::string> const& known, std::string const& plugin);

//! An int32 attribute value read as a double, or a PluginError naming it.
int32_t toInt32Field(double value, char const* name, std::string const& plugin);

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
