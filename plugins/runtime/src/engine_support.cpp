// SPDX-License-Identifier: Apache-2.0
#include "engine_support.h"

#include <mutex>
#include <utility>

namespace dtp
{

char const* toString(TensorType type) noexcept
{
    switch (type)
    {
    case TensorType::kFLOAT: return "float32";
    case TensorType::kHALF: return "float16";
    case TensorType::kINT32: return "int32";
    case TensorType::kINT64: return "int64";
    case TensorType::kOTHER: break;
    }
    return "an unsupported type";
}

namespace
{

constexpr char const* kIMAGES = "images";
constexpr char const* kSCORES = "scores";
constexpr char const* kKEEP_COUNTS = "keep_counts";
constexpr char const* kLABELS = "labels";

bool isFloat(TensorType t)
{
    return t == TensorType::kFLOAT || t == TensorType::kHALF;
}

} // namespace

BindingPlan planBindings(std::vector<TensorInfo> const& tensors, std::string const& path)
{
    BindingPlan plan;
    bool images = false;
    bool scores = false;
    bool keep = false;
    auto const refuse = [&](TensorInfo const& t, std::string const& why) {
        throw Error(path + ": " + (t.isInput ? "input" : "output") + " '" + t.name + "' " + why
            + "; build the engine from a graph exported by dtp-export (input images; outputs scores, keep_counts, "
              "optionally labels)");
    };
    for (TensorInfo const& t : tensors)
    {
        if (t.isInput)
        {
            if (t.name != kIMAGES)
            {
                refuse(t, "is not an input of a dtp model");
            }
            if (!isFloat(t.type))
            {
                refuse(t, std::string("is ") + toString(t.type) + ", expected float32 or float16");
            }
            plan.images = t.type;
            images = true;
        }
        else if (t.name == kSCORES)
        {
            if (!isFloat(t.type))
            {
                refuse(t, std::string("is ") + toString(t.type) + ", expected float32 or float16");
            }
            plan.scores = t.type;
            scores = true;
        }
        else if (t.name == kKEEP_COUNTS)
        {
            if (t.type != TensorType::kINT32)
            {
                refuse(t, std::string("is ") + toString(t.type) + ", expected int32");
            }
            keep = true;
        }
        else if (t.name == kLABELS)
        {
            if (t.type != TensorType::kINT32 && t.type != TensorType::kINT64)
            {
                refuse(t, std::string("is ") + toString(t.type) + ", expected int32 or int64");
            }
            plan.scratch.push_back(t);
        }
        else
        {
            refuse(t, "is not an output of a dtp model");
        }
    }
    for (auto const& [found, name] :
        {std::pair<bool, char const*>{images, kIMAGES}, {scores, kSCORES}, {keep, kKEEP_COUNTS}})
    {
        if (!found)
        {
            throw Error(path + " has no tensor '" + name + "'; build it from a graph exported by dtp-export");
        }
    }
    return plan;
}

void ensurePluginLibrary(std::string const& library, PluginRegistryHooks const& hooks)
{
    if (library.empty())
    {
        return;
    }
    // One lock for the process: two Segmenters created at once must not both load the library.
    static std::mutex mutex;
    std::lock_guard<std::mutex> lock(mutex);
    if (hooks.registered())
    {
        return; // loaded by an earlier Segmenter, or registered by the application
    }
    if (!hooks.load(library))
    {
        throw Error("cannot load the plugin library " + library
            + "; build it (scripts/build_plugins.sh) and pass its path in Options::pluginLibrary");
    }
    if (!hooks.registered())
    {
        throw Error("the plugin library " + library
            + " loaded but registered no dtp TokenSplit/TokenReconstruct creators (namespace dtp, version 1); "
              "is it libdtp_plugins.so?");
    }
}

GrowBuffer::GrowBuffer(Allocate allocate, Release release)
    : mAllocate(std::move(allocate))
    , mRelease(std::move(release))
{
}

GrowBuffer::GrowBuffer(GrowBuffer&& other) noexcept
    : mAllocate(std::move(other.mAllocate))
    , mRelease(std::move(other.mRelease))
    , mPtr(std::exchange(other.mPtr, nullptr))
    , mBytes(std::exchange(other.mBytes, 0))
{
}

GrowBuffer::~GrowBuffer()
{
    if (mPtr != nullptr)
    {
        mRelease(mPtr);
    }
}

void* GrowBuffer::reserve(size_t bytes, char const* what)
{
    if (bytes <= mBytes && mPtr != nullptr)
    {
        return mPtr;
    }
    if (mPtr != nullptr)
    {
        mRelease(mPtr);
        mPtr = nullptr;
    }
    mBytes = 0; // nothing held until the allocation succeeds
    void* ptr = mAllocate(bytes == 0 ? 1 : bytes);
    if (ptr == nullptr)
    {
        throw Error(std::string("cannot allocate ") + std::to_string(bytes) + " bytes of device memory for " + what);
    }
    mPtr = ptr;
    mBytes = bytes;
    return mPtr;
}

} // namespace dtp
