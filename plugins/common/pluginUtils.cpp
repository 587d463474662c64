// SPDX-License-Identifier: Apache-2.0
#include "common/pluginUtils.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

namespace dtp
{
namespace
{
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};
} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

void logMessage(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    try
    {
        std::string const text = "[dtp plugins] " + message;
        nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
        nvinfer1::ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
        if (logger != nullptr)
        {
            logger->log(severity, text.c_str());
        }
        else if (severity <= nvinfer1::ILogger::Severity::kWARNING)
        {
            // Apps that register the creators themselves may never hand us a logger finder.
            std::fprintf(stderr, "%s\n", text.c_str());
        }
    }
    catch (...)
    {
        // Logging must not throw out of a noexcept caller; nothing more can be done here.
    }
}

double readNumericField(nvinfer1::PluginField const& field, std::string const& plugin)
{
    using nvinfer1::PluginFieldType;
    check(field.data != nullptr && field.length >= 1,
        plugin + ": field '" + field.name + "' has no value");
    check(field.length == 1, plugin + ": field '" + field.name + "' must be a scalar, got "
            + std::to_string(field.length) + " values");
    switch (field.type)
    {
    case PluginFieldType::kFLOAT32: return *static_cast<float const*>(field.data);
    case PluginFieldType::kFLOAT64: return *static_cast<double const*>(field.data);
    case PluginFieldType::kINT32: return *static_cast<int32_t const*>(field.data);
    case PluginFieldType::kINT64: return static_cast<double>(*static_cast<int64_t const*>(field.data));
    case PluginFieldType::kINT16: return *static_cast<int16_t const*>(field.data);
    case PluginFieldType::kINT8: return *static_cast<int8_t const*>(field.data);
    default: break;
    }
    throw PluginError(plugin + ": field '" + field.name + "' has type "
        + std::to_string(static_cast<int32_t>(field.type)) + "; expected a number (kFLOAT32 or kINT32)");
}

bool isParserStringField(nvinfer1::PluginField const& field) noexcept
{
    return field.name != nullptr
        && (std::strcmp(field.name, "plugin_namespace") == 0 || std::strcmp(field.name, "plugin_version") == 0);
}

std::map<std::string, double> readNumericFields(
    nvinfer1::PluginFieldCollection const* fc, std::vector<std::string> const& known, std::string const& plugin)
{
    std::map<std::string, double> values;
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
    {
        nvinfer1::PluginField const& field = fc->fields[i];
        check(field.name != nullptr, plugin + ": unnamed plugin field");
        if (isParserStringField(field))
        {
            continue;
        }
        if (std::find(known.begin(), known.end(), field.name) == known.end())
        {
            std::string expected;
            for (std::string const& name : known)
            {
                expected += (expected.empty() ? "" : ", ") + name;
            }
            throw PluginError(plugin + ": unknown field '" + field.name + "'; expected "
                + (expected.empty() ? std::string("none (the op has no attributes)") : expected));
        }
        values[field.name] = readNumericField(field, plugin);
    }
    return values;
}

int32_t toInt32Field(double value, char const* name, std::string const& plugin)
{
    check(value == std::floor(value) && value >= std::numeric_limits<int32_t>::min()
            && value <= std::numeric_limits<int32_t>::max(),
        plugin + ": field '" + name + "' = " + std::to_string(value) + " is not an int32 value");
    return static_cast<int32_t>(value);
}

TokenType toTokenType(nvinfer1::DataType type, std::string const& plugin)
{
    switch (type)
    {
    case nvinfer1::DataType::kFLOAT: return TokenType::kFLOAT32;
    case nvinfer1::DataType::kHALF: return TokenType::kFLOAT16;
    default: break;
    }
    throw PluginError(plugin + ": unsupported token type " + std::to_string(static_cast<int32_t>(type))
        + "; expected kFLOAT or kHALF");
}

int32_t toInt32Dim(int64_t value, char const* what, std::string const& plugin)
{
    check(value >= 0 && value <= std::numeric_limits<int32_t>::max(),
        plugin + ": " + what + " = " + std::to_string(value) + " is out of the supported range [0, 2^31)");
    return static_cast<int32_t>(value);
}

} // namespace dtp
