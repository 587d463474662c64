// SPDX-License-Identifier: Apache-2.0
//
// Warp-per-row copies used by both token kernels. Rows are moved as raw bytes with the widest
// vector type that the row size and every base pointer allow, so one instantiation per vector
// width serves float and half alike (and keeps nvcc time low).
#ifndef DTP_PLUGINS_COMMON_ROW_COPY_CUH
#define DTP_PLUGINS_COMMON_ROW_COPY_CUH

#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>
#include <initializer_list>

namespace dtp
{

constexpr int32_t kWARP_SIZE = 32;

//! Largest of 16/8/4/2/1 bytes that divides the row size and the alignment of every pointer.
inline int32_t pickVectorBytes(size_t rowBytes, std::initializer_list<void const*> pointers) noexcept
{
    uintptr_t bits = static_cast<uintptr_t>(rowBytes);
    for (void const* p : pointers)
    {
        bits |= reinterpret_cast<uintptr_t>(p);
    }
    for (int32_t width = 16; width > 1; width /= 2)
    {
        if ((bits & static_cast<uintptr_t>(width - 1)) == 0)
        {
            return width;
        }
    }
    return 1;
}

//! Copy one row of `nbVecs` vectors; called by all 32 lanes of a warp.
template <typename VecT>
__device__ __forceinline__ void warpCopyRow(VecT* dst, VecT const* src, int64_t nbVecs, int32_t lane)
{
    for (int64_t i = lane; i < nbVecs; i += kWARP_SIZE)
    {
        dst[i] = src[i];
    }
}

//! Zero one row of `nbVecs` vectors; called by all 32 lanes of a warp.
template <typename VecT>
__device__ __forceinline__ void warpZeroRow(VecT* dst, int64_t nbVecs, int32_t lane)
{
    VecT zero;
    // Byte-wise zero works for every vector type (uint4, uint2, ...) without per-type code.
    unsigned char* bytes = reinterpret_cast<unsigned char*>(&zero);
#pragma unroll
    for (size_t k = 0; k < sizeof(VecT); ++k)
    {
        bytes[k] = 0;
    }
    for (int64_t i = lane; i < nbVecs; i += kWARP_SIZE)
    {
        dst[i] = zero;
    }
}

//! Dispatch a kernel template on the vector type for `vecBytes` (one of 16, 8, 4, 2, 1).
template <template <typename> class Launch, typename... Args>
cudaError_t dispatchVector(int32_t vecBytes, Args&&... args)
{
    switch (vecBytes)
    {
    case 16: return Launch<uint4>::run(args...);
    case 8: return Launch<uint2>::run(args...);
    case 4: return Launch<uint32_t>::run(args...);
    case 2: return Launch<uint16_t>::run(args...);
    case 1: return Launch<uint8_t>::run(args...);
    }
    return cudaErrorInvalidValue;
}

} // namespace dtp

#endif // DTP_PLUGINS_COMMON_ROW_COPY_CUH
