// SPDX-License-Identifier: Apache-2.0
// Engine-independent pieces of the engine backends, apart so that they are tested without an
// engine library or a GPU (tests/runtime_test.cpp): which I/O tensors an engine may have and how
// each is bound, loading a plugin library once per process, and a grow-only device buffer.
#ifndef DTP_RUNTIME_ENGINE_SUPPORT_H
#define DTP_RUNTIME_ENGINE_SUPPORT_H

#include "dtp/processing.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace dtp
{

//! The element types the runtime distinguishes (kOTHER: anything else the engine may use).
enum class TensorType : int32_t
{
    kFLOAT,
    kHALF,
    kINT32,
    kINT64,
    kOTHER,
};

char const* toString(TensorType type) noexcept;

struct TensorInfo
{
    std::string name;
    bool isInput{false};
    TensorType type{TensorType::kOTHER};
};

//! How each I/O tensor of an engine is used. Every I/O tensor gets an address: enqueue fails
//! otherwise, so an engine with a tensor the runtime does not know is refused up front.
struct BindingPlan
{
    TensorType images{TensorType::kFLOAT};
    TensorType scores{TensorType::kFLOAT};
    //! Outputs the runtime binds to scratch memory and does not read (e.g. `labels` of graphs
    //! exported with --postprocess argmax: the runtime computes labels itself).
    std::vector<TensorInfo> scratch;
};

//! The plan for an engine with `tensors`, or an Error naming `path`, the tensor and the fix.
//! Expected: input `images` (float/half); outputs `scores` (float/half), `keep_counts` (int32),
//! optional `labels` (int32/int64).
BindingPlan planBindings(std::vector<TensorInfo> const& tensors, std::string const& path);

//! What a backend needs from an engine library's plugin registry.
struct PluginRegistryHooks
{
    //! True when the dtp creators (TokenSplit and TokenReconstruct, namespace dtp, version 1)
    //! are registered, by an earlier load or by the application itself.
    std::function<bool()> registered;
    //! Load a plugin library into the registry; false on failure.
    std::function<bool(std::string const&)> load;
};

//! Make the dtp plugins available: nothing when `library` is empty or the creators are already
//! registered; otherwise load `library` once per process (a second load would fail to register
//! the creators again). Thread-safe. Throws Error naming the library and the fix.
void ensurePluginLibrary(std::string const& library, PluginRegistryHooks const& hooks);

//! A grow-only buffer over an allocator (cudaMalloc/cudaFree in the backends). After a failed
//! allocation it holds nothing, so the next reserve() tries again instead of returning null.
class GrowBuffer
{
public:
    using Allocate = std::function<void*(size_t)>; //!< nullptr on failure
    using Release = std::function<void(void*)>;

    GrowBuffer(Allocate allocate, Release release);
    ~GrowBuffer();
    GrowBuffer(GrowBuffer&& other) noexcept;
    GrowBuffer(GrowBuffer const&) = delete;
    GrowBuffer& operator=(GrowBuffer const&) = delete;
    GrowBuffer& operator=(GrowBuffer&&) = delete;

    //! At least `bytes` bytes (contents not kept); throws Error naming `what` on failure.
    void* reserve(size_t bytes, char const* what);
    void* data() const noexcept { return mPtr; }
    size_t capacity() const noexcept { return mBytes; }

private:
    Allocate mAllocate;
    Release mRelease;
    void* mPtr{nullptr};
    size_t mBytes{0};
};

} // namespace dtp

#endif // DTP_RUNTIME_ENGINE_SUPPORT_H
