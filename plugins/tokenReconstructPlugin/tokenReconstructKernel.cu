// SPDX-License-Identifier: Apache-2.0
//
// TokenReconstruct: build an inverse map (output row -> update row or -1), then one pass of warps
// that copies each output row from wherever it comes from. Copying base and scattering on top
// would move the updated rows twice.
#include "common/rowCopy.cuh"
#include "tokenReconstructPlugin/tokenReconstructKernel.h"

#include <algorithm>

namespace dtp
{
namespace
{

constexpr int32_t kSCATTER_THREADS = 256;
constexpr int32_t kCOPY_THREADS = 256;
constexpr int32_t kMAX_COPY_BLOCKS = 4096;

__global__ void __launch_bounds__(kSCATTER_THREADS) inverseMapKernel(
    int32_t const* __restrict__ index, int32_t batch, int32_t numTokens, int32_t numUpdates, int32_t* inverse)
{
    int64_t const total = static_cast<int64_t>(batch) * numUpdates;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    {
        int32_t const target = index[i];
        if (target >= 0 && target < numTokens)
        {
            int64_t const b = i / numUpdates;
            inverse[b * numTokens + target] = static_cast<int32_t>(i - b * numUpdates);
        }
    }
}

template <typename VecT>
__global__ void __launch_bounds__(kCOPY_THREADS) assembleKernel(VecT const* base, VecT const* __restrict__ updates,
    int32_t const* __restrict__ inverse, int32_t batch, int32_t numTokens, int32_t numUpdates, int64_t vecsPerRow,
    VecT* out)
{
    int64_t const totalRows = static_cast<int64_t>(batch) * numTokens;
    int32_t const lane = threadIdx.x % kWARP_SIZE;
    int32_t const warpsPerBlock = blockDim.x / kWARP_SIZE;
    int64_t const rowStride = static_cast<int64_t>(gridDim.x) * warpsPerBlock;
    for (int64_t row = static_cast<int64_t>(blockIdx.x) * warpsPerBlock + threadIdx.x / kWARP_SIZE; row < totalRows;
         row += rowStride)
    {
        int32_t const from = inverse[row];
        if (from >= 0)
        {
            int64_t const b = row / numTokens;
            warpCopyRow(out + row * vecsPerRow, updates + (b * numUpdates + from) * vecsPerRow, vecsPerRow, lane);
        }
        else if (out != base)
        {
            warpCopyRow(out + row * vecsPerRow, base + row * vecsPerRow, vecsPerRow, lane);
        }
    }
}

template <typename VecT>
struct AssembleLaunch
{
    static cudaError_t run(TokenReconstructParams const& p, int32_t const* inverse, int64_t vecsPerRow,
        cudaStream_t stream)
    {
        int32_t const warpsPerBlock = kCOPY_THREADS / kWARP_SIZE;
        int64_t const rows = static_cast<int64_t>(p.batch) * p.numTokens;
        int32_t const blocks
            = static_cast<int32_t>(std::min<int64_t>((rows + warpsPerBlock - 1) / warpsPerBlock, kMAX_COPY_BLOCKS));
        assembleKernel<VecT><<<blocks, kCOPY_THREADS, 0, stream>>>(static_cast<VecT const*>(p.base),
            static_cast<VecT const*>(p.updates), inverse, p.batch, p.numTokens, p.numUpdates, vecsPerRow,
            static_cast<VecT*>(p.out));
        return cudaGetLastError();
    }
};

} // namespace

size_t tokenReconstructWorkspaceSize(int32_t batch, int32_t numTokens) noexcept
{
    if (batch <= 0 || numTokens <= 0)
    {
        return 0;
    }
    return alignUp(static_cast<size_t>(batch) * static_cast<size_t>(numTokens) * sizeof(int32_t));
}

cudaError_t tokenReconstruct(TokenReconstructParams const& p, cudaStream_t stream)
{
    if (p.batch < 0 || p.numTokens < 0 || p.numUpdates < 0 || p.channels < 0)
    {
        return cudaErrorInvalidValue;
    }
    size_t const rowBytes = static_cast<size_t>(p.channels) * elementSize(p.tokenType);
    size_t const rows = static_cast<size_t>(p.batch) * static_cast<size_t>(p.numTokens);
    if (rows == 0 || rowBytes == 0)
    {
        return cudaSuccess;
    }
    if (p.base == nullptr || p.out == nullptr)
    {
        return cudaErrorInvalidValue;
    }
    if (p.numUpdates == 0)
    {
        // Nothing to scatter: a plain copy runs at copy-engine speed.
        return p.out == p.base ? cudaSuccess
                               : cudaMemcpyAsync(p.out, p.base, rows * rowBytes, cudaMemcpyDeviceToDevice, stream);
    }
    if (p.updates == nullptr || p.index == nullptr || p.workspace == nullptr)
    {
        return cudaErrorInvalidValue;
    }

    auto* inverse = static_cast<int32_t*>(p.workspace);
    cudaError_t status = cudaMemsetAsync(inverse, 0xFF, rows * sizeof(int32_t), stream); // all -1
    if (status != cudaSuccess)
    {
        return status;
    }
    int64_t const updates = static_cast<int64_t>(p.batch) * p.numUpdates;
    int32_t const scatterBlocks
        = static_cast<int32_t>(std::min<int64_t>((updates + kSCATTER_THREADS - 1) / kSCATTER_THREADS, 1024));
    inverseMapKernel<<<scatterBlocks, kSCATTER_THREADS, 0, stream>>>(
        p.index, p.batch, p.numTokens, p.numUpdates, inverse);
    status = cudaGetLastError();
    if (status != cudaSuccess)
    {
        return status;
    }

    int32_t const vecBytes = pickVectorBytes(rowBytes, {p.base, p.updates, p.out});
    int64_t const vecsPerRow = static_cast<int64_t>(rowBytes / vecBytes);
    return dispatchVector<AssembleLaunch>(vecBytes, p, static_cast<int32_t const*>(inverse), vecsPerRow, stream);
}

} // namespace dtp
