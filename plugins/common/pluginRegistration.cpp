// SPDX-License-Identifier: Apache-2.0
#include "common/pluginRegistration.h"

#include "common/pluginUtils.h"
#include "tokenReconstructPlugin/tokenReconstructPlugin.h"
#include "tokenSplitPlugin/tokenSplitPlugin.h"

namespace
{

// Function-local statics: constructed on first use, so loading the library runs no code.
nvinfer1::IPluginCreatorInterface* const* creatorList(int32_t& count) noexcept
{
    static dtp::TokenSplitPluginCreator splitCreator;
    static dtp::TokenReconstructPluginCreator reconstructCreator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&splitCreator, &reconstructCreator};
    count = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
    return creators;
}

} // namespace

extern "C"
{
    void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
    {
        dtp::setLoggerFinder(finder);
    }

    nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
    {
        return creatorList(nbCreators);
    }
}

namespace dtp
{

bool registerPlugins(nvinfer1::IPluginRegistry& registry) noexcept
{
    int32_t count = 0;
    nvinfer1::IPluginCreatorInterface* const* creators = creatorList(count);
    bool ok = true;
    for (int32_t i = 0; i < count; ++i)
    {
        if (!registry.registerCreator(*creators[i], kPLUGIN_NAMESPACE))
        {
            logMessage(nvinfer1::ILogger::Severity::kWARNING,
                std::string("registry refused creator #") + std::to_string(i) + " (already registered?)");
            ok = false;
        }
    }
    return ok;
}

} // namespace dtp
