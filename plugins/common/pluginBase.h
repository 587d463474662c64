// SPDX-License-Identifier: Apache-2.0
//
// The IPluginV3 plumbing both dtp plugins share: capability dispatch, clone, names, the
// serialised field collection, and the creator's name/version/namespace/field list. A plugin
// derives from PluginBase<Itself> and implements only what differs: types, shapes, formats,
// workspace and enqueue. Compiled only when TensorRT headers are found.
#ifndef DTP_PLUGINS_COMMON_PLUGIN_BASE_H
#define DTP_PLUGINS_COMMON_PLUGIN_BASE_H

#include "common/pluginUtils.h"

#include <NvInferRuntime.h>

#include <memory>
#include <string>
#include <vector>

namespace dtp
{

//! `Derived` provides kPLUGIN_NAME, kNB_OUTPUTS and a copy constructor that calls its
//! initFields() (the field records point at the copy's own members).
template <typename Derived>
class PluginBase : public nvinfer1::IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuild,
                   public nvinfer1::IPluginV3OneRuntime
{
public:
    PluginBase() = default;
    PluginBase& operator=(PluginBase const&) = delete;
    ~PluginBase() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override
    {
        return guarded<nvinfer1::IPluginCapability*>(
            Derived::kPLUGIN_NAME, "getCapabilityInterface", nullptr, [&]() -> nvinfer1::IPluginCapability* {
                switch (type)
                {
                case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
                case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
                case nvinfer1::PluginCapabilityType::kRUNTIME:
                    return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
                }
                throw PluginError(std::string(Derived::kPLUGIN_NAME) + ": unknown capability "
                    + std::to_string(static_cast<int32_t>(type)));
            });
    }

    nvinfer1::IPluginV3* clone() noexcept override
    {
        return guarded<nvinfer1::IPluginV3*>(Derived::kPLUGIN_NAME, "clone", nullptr,
            [&]() { return std::make_unique<Derived>(static_cast<Derived const&>(*this)).release(); });
    }

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override { return Derived::kPLUGIN_NAME; }
    char const* getPluginVersion() const noexcept override { return kPLUGIN_VERSION; }
    char const* getPluginNamespace() const noexcept override { return kPLUGIN_NAMESPACE; }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override { return Derived::kNB_OUTPUTS; }

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* /*in*/, int32_t /*nbInputs*/,
        nvinfer1::PluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) noexcept override
    {
        return 0; // nothing is cached per shape: enqueue reads the shapes it is given
    }
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept override
    {
        return clone(); // no per-context resources
    }
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        return &mFields.collection;
    }

protected:
    // Copying the interface bases copies no state; the fields are re-pointed by the derived class.
    PluginBase(PluginBase const& other)
        : nvinfer1::IPluginV3(other)
        , nvinfer1::IPluginV3OneCore(other)
        , nvinfer1::IPluginV3OneBuild(other)
        , nvinfer1::IPluginV3OneRuntime(other)
    {
    }

    FieldCollection mFields; //!< what getFieldsToSerialize returns, over the derived's members
};

//! Creator of `Plugin`: declares the plugin's fields (what the ONNX parser will look up on the
//! node) and hands the parsed fields to Plugin::create.
template <typename Plugin>
class PluginCreatorBase : public nvinfer1::IPluginCreatorV3One
{
public:
    PluginCreatorBase()
    {
        for (FieldSpec const& spec : Plugin::kFIELDS)
        {
            mFieldNames.fields.emplace_back(spec.name, nullptr, spec.type, 1);
        }
        mFieldNames.refresh();
    }

    char const* getPluginName() const noexcept override { return Plugin::kPLUGIN_NAME; }
    char const* getPluginVersion() const noexcept override { return kPLUGIN_VERSION; }
    char const* getPluginNamespace() const noexcept override { return kPLUGIN_NAMESPACE; }
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return &mFieldNames.collection; }

    nvinfer1::IPluginV3* createPlugin(char const* /*name*/, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase /*phase*/) noexcept override
    {
        return guarded<nvinfer1::IPluginV3*>(Plugin::kPLUGIN_NAME, "createPlugin", nullptr, [&]() {
            std::vector<std::string> known;
            for (FieldSpec const& spec : Plugin::kFIELDS)
            {
                known.emplace_back(spec.name);
            }
            return Plugin::create(readNumericFields(fc, known, Plugin::kPLUGIN_NAME)).release();
        });
    }

private:
    FieldCollection mFieldNames;
};

} // namespace dtp

#endif // DTP_PLUGINS_COMMON_PLUGIN_BASE_H
