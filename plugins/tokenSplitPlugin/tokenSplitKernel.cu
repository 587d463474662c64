// SPDX-License-Identifier: Apache-2.0
//
// TokenSplit in two kernels:
//  1. one block per image decides which tokens stay (threshold + per-class top-k context rule)
//     and compacts their positions with a block-wide scan (stable);
//  2. a grid of warps gathers the kept rows into the [B, M, C] output (M read from the counts on
//     the device) and writes the zero padding.
// Kernel 1 never touches the token features, kernel 2 moves them as raw bytes, so float and half
// share every instantiation.
#include "common/rowCopy.cuh"
#include "tokenSplitPlugin/tokenSplitKernel.h"

#include <algorithm>

namespace dtp
{
namespace
{

constexpr int32_t kRANK_THREADS = 512;
constexpr int32_t kGATHER_THREADS = 256;
constexpr int32_t kMAX_GATHER_BLOCKS = 2048;
//! Per-class maxima live in shared memory up to this many classes (32 KiB), else in the workspace.
constexpr int32_t kMAX_SHARED_CLASSES = 4096;
constexpr unsigned kFULL_MASK = 0xFFFFFFFFU;

enum TokenState : uint8_t
{
    kDROP = 0,
    kKEEP = 1,
    kCANDIDATE = 2, //!< confident; kept only if it wins a top-k slot of its label
};

struct WorkspaceLayout
{
    size_t stateOffset{0};
    size_t sourceOffset{0};
    size_t bestOffset{0};
    size_t total{0};
    bool globalBest{false};
};

WorkspaceLayout workspaceLayout(int32_t batch, int32_t numTokens, int32_t numClasses) noexcept
{
    WorkspaceLayout layout;
    size_t const tokens = static_cast<size_t>(batch) * static_cast<size_t>(numTokens);
    layout.stateOffset = 0;
    layout.sourceOffset = alignUp(tokens * sizeof(uint8_t));
    layout.bestOffset = layout.sourceOffset + alignUp(tokens * sizeof(int32_t));
    layout.globalBest = numClasses > kMAX_SHARED_CLASSES;
    size_t const bestBytes = layout.globalBest
        ? alignUp(static_cast<size_t>(batch) * static_cast<size_t>(numClasses) * sizeof(unsigned long long))
        : 0;
    layout.total = layout.bestOffset + bestBytes;
    return layout;
}

//! Monotone map of a confidence to an unsigned key; -0.0 equals +0.0 (the contract compares
//! values, not bits). Only confident tokens get a key, so never NaN.
__device__ __forceinline__ uint32_t confidenceKey(float c)
{
    uint32_t const bits = __float_as_uint(c == 0.F ? 0.F : c);
    return (bits & 0x80000000U) ? ~bits : (bits | 0x80000000U);
}

//! Unique per token: higher confidence first, then lower position (the reference's tie break).
__device__ __forceinline__ unsigned long long rankKey(float c, int32_t position)
{
    return (static_cast<unsigned long long>(confidenceKey(c)) << 32)
        | static_cast<unsigned long long>(0xFFFFFFFFU - static_cast<uint32_t>(position));
}

//! atomicMax of `key` into best[label], first reduced among the lanes that share a label: an
//! image where most tokens predict one class would otherwise serialise on one address.
__device__ __forceinline__ void labelMax(
    unsigned long long* best, int32_t label, unsigned long long key, unsigned activeMask)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned const peers = __match_any_sync(activeMask, label);
    uint32_t const high = static_cast<uint32_t>(key >> 32);
    uint32_t const highMax = __reduce_max_sync(peers, high);
    unsigned const top = __ballot_sync(peers, high == highMax);
    // Lanes hold increasing positions, so the lowest lane with the top confidence holds the
    // group's largest key.
    if (__ffs(static_cast<int>(top)) - 1 == static_cast<int>(threadIdx.x % kWARP_SIZE))
    {
        atomicMax(best + label, key);
    }
#else
    (void) activeMask;
    atomicMax(best + label, key);
#endif
}

__global__ void __launch_bounds__(kRANK_THREADS) rankCompactKernel(float const* __restrict__ confidenceAll,
    int32_t const* __restrict__ labelAll, int32_t const* __restrict__ indexAll, int32_t numTokens, float threshold,
    int32_t contextTopk, int32_t numClasses, uint8_t* stateAll, int32_t* sourceAll, unsigned long long* globalBest,
    int32_t* counts)
{
    extern __shared__ unsigned long long sharedBest[];
    __shared__ int32_t sWarpOffsets[kWARP_SIZE];
    __shared__ int32_t sChunkTotal;
    __shared__ int32_t sHasCandidates;

    int32_t const b = blockIdx.x;
    int32_t const tid = threadIdx.x;
    int32_t const lane = tid % kWARP_SIZE;
    int32_t const warp = tid / kWARP_SIZE;
    int32_t const nbWarps = blockDim.x / kWARP_SIZE;
    size_t const rowBase = static_cast<size_t>(b) * static_cast<size_t>(numTokens);
    float const* confidence = confidenceAll + rowBase;
    int32_t const* label = labelAll + rowBase;
    int32_t const* index = indexAll + rowBase;
    uint8_t* state = stateAll + rowBase;
    int32_t* source = sourceAll + rowBase;
    unsigned long long* best
        = globalBest != nullptr ? globalBest + static_cast<size_t>(b) * static_cast<size_t>(numClasses) : sharedBest;

    if (tid == 0)
    {
        sHasCandidates = 0;
    }
    __syncthreads();

    // Threshold rule (DESIGN.md section 2): "not above", so equality and NaN stay. Only confident
    // tokens compete for context slots: anything that outranks a confident token is itself
    // confident, so the others (NaN included, which takes no slot) never change a rank that
    // matters. A label outside [0, numClasses) takes no slot.
    bool anyCandidate = false;
    for (int32_t n = tid; n < numTokens; n += blockDim.x)
    {
        uint8_t s = kDROP;
        if (index[n] >= 0)
        {
            float const c = confidence[n];
            if (!(c > threshold))
            {
                s = kKEEP;
            }
            else if (contextTopk > 0)
            {
                int32_t const l = label[n];
                s = (l >= 0 && l < numClasses) ? kCANDIDATE : kDROP;
            }
        }
        state[n] = s;
        anyCandidate |= s == kCANDIDATE;
    }
    if (anyCandidate)
    {
        sHasCandidates = 1;
    }
    __syncthreads();

    // Context rule: round r picks, for every label, the best candidate left: after contextTopk
    // rounds the picked tokens are exactly the top-k of each label.
    for (int32_t round = 0; round < contextTopk; ++round)
    {
        if (sHasCandidates == 0)
        {
            break;
        }
        for (int32_t c = tid; c < numClasses; c += blockDim.x)
        {
            best[c] = 0ULL;
        }
        __syncthreads();
        if (tid == 0)
        {
            sHasCandidates = 0;
        }
        for (int32_t base = 0; base < numTokens; base += blockDim.x)
        {
            int32_t const n = base + tid;
            bool const active = n < numTokens && state[n] == kCANDIDATE;
            unsigned const activeMask = __ballot_sync(kFULL_MASK, active);
            if (active)
            {
                labelMax(best, label[n], rankKey(confidence[n], n), activeMask);
            }
        }
        __syncthreads();
        for (int32_t n = tid; n < numTokens; n += blockDim.x)
        {
            if (state[n] == kCANDIDATE)
            {
                if (best[label[n]] == rankKey(confidence[n], n))
                {
                    state[n] = kKEEP;
                }
                else
                {
                    sHasCandidates = 1;
                }
            }
        }
        __syncthreads();
    }

    // Stable compaction, one block-wide chunk at a time: ballot gives the rank inside a warp,
    // a scan over the warp totals the warp's offset, `carry` the offset of the chunk.
    int32_t carry = 0;
    for (int32_t base = 0; base < numTokens; base += blockDim.x)
    {
        int32_t const n = base + tid;
        bool const keep = n < numTokens && state[n] == kKEEP;
        unsigned const ballot = __ballot_sync(kFULL_MASK, keep);
        if (lane == 0)
        {
            sWarpOffsets[warp] = __popc(ballot);
        }
        __syncthreads();
        if (warp == 0)
        {
            int32_t const own = lane < nbWarps ? sWarpOffsets[lane] : 0;
            int32_t inclusive = own;
#pragma unroll
            for (int32_t offset = 1; offset < kWARP_SIZE; offset *= 2)
            {
                int32_t const up = __shfl_up_sync(kFULL_MASK, inclusive, offset);
                inclusive += lane >= offset ? up : 0;
            }
            __syncwarp();
            if (lane < nbWarps)
            {
                sWarpOffsets[lane] = inclusive - own;
            }
            if (lane == kWARP_SIZE - 1)
            {
                sChunkTotal = inclusive;
            }
        }
        __syncthreads();
        if (keep)
        {
            unsigned const lowerLanes = (1U << lane) - 1U;
            source[carry + sWarpOffsets[warp] + __popc(ballot & lowerLanes)] = n;
        }
        carry += sChunkTotal;
        __syncthreads();
    }
    if (tid == 0)
    {
        counts[b] = carry;
    }
}

template <typename VecT>
__global__ void __launch_bounds__(kGATHER_THREADS) gatherKernel(VecT const* __restrict__ tokens,
    int32_t const* __restrict__ index, int32_t const* __restrict__ source, int32_t const* __restrict__ counts,
    int32_t batch, int32_t numTokens, int64_t vecsPerRow, bool packed, VecT* __restrict__ keptTokens,
    int32_t* __restrict__ keptIndex, int64_t* maxCount)
{
    __shared__ int32_t sMax;
    if (threadIdx.x == 0)
    {
        sMax = 0;
    }
    __syncthreads();
    // Every block derives M itself from the B counts: cheaper than another launch or a grid sync.
    int32_t localMax = 0;
    for (int32_t b = threadIdx.x; b < batch; b += blockDim.x)
    {
        localMax = max(localMax, counts[b]);
    }
    if (localMax > 0)
    {
        atomicMax(&sMax, localMax);
    }
    __syncthreads();
    int32_t const m = sMax;
    if (blockIdx.x == 0 && threadIdx.x == 0)
    {
        *maxCount = m;
    }

    int32_t const rowsPerImage = packed ? m : numTokens;
    int64_t const totalRows = static_cast<int64_t>(batch) * rowsPerImage;
    int32_t const lane = threadIdx.x % kWARP_SIZE;
    int32_t const warpsPerBlock = blockDim.x / kWARP_SIZE;
    int64_t const firstRow = static_cast<int64_t>(blockIdx.x) * warpsPerBlock + threadIdx.x / kWARP_SIZE;
    int64_t const rowStride = static_cast<int64_t>(gridDim.x) * warpsPerBlock;
    for (int64_t row = firstRow; row < totalRows; row += rowStride)
    {
        int64_t const b = row / rowsPerImage;
        int32_t const slot = static_cast<int32_t>(row - b * rowsPerImage);
        VecT* dst = keptTokens + row * vecsPerRow;
        if (slot < counts[b])
        {
            int64_t const src = b * numTokens + source[b * numTokens + slot];
            warpCopyRow(dst, tokens + src * vecsPerRow, vecsPerRow, lane);
            if (lane == 0)
            {
                keptIndex[row] = index[src];
            }
        }
        else
        {
            warpZeroRow(dst, vecsPerRow, lane);
            if (lane == 0)
            {
                keptIndex[row] = -1;
            }
        }
    }
}

template <typename VecT>
struct GatherLaunch
{
    static cudaError_t run(TokenSplitParams const& p, int32_t const* source, int64_t vecsPerRow, cudaStream_t stream)
    {
        int32_t const warpsPerBlock = kGATHER_THREADS / kWARP_SIZE;
        int64_t const rows = static_cast<int64_t>(p.batch) * p.numTokens;
        int64_t const wanted = (rows + warpsPerBlock - 1) / warpsPerBlock;
        int32_t const blocks = static_cast<int32_t>(std::min<int64_t>(std::max<int64_t>(wanted, 1), kMAX_GATHER_BLOCKS));
        gatherKernel<VecT><<<blocks, kGATHER_THREADS, 0, stream>>>(static_cast<VecT const*>(p.tokens), p.index, source,
            p.counts, p.batch, p.numTokens, vecsPerRow, p.layout == TokenSplitLayout::kPACKED,
            static_cast<VecT*>(p.keptTokens), p.keptIndex, p.maxCount);
        return cudaGetLastError();
    }
};

} // namespace

size_t tokenSplitWorkspaceSize(int32_t batch, int32_t numTokens, int32_t numClasses) noexcept
{
    if (batch <= 0 || numTokens <= 0)
    {
        return 0;
    }
    return workspaceLayout(batch, numTokens, numClasses).total;
}

cudaError_t tokenSplit(TokenSplitParams const& p, cudaStream_t stream)
{
    if (p.batch < 0 || p.numTokens < 0 || p.channels < 0 || p.contextTopk < 0 || p.maxCount == nullptr
        || (p.contextTopk > 0 && p.numClasses <= 0))
    {
        return cudaErrorInvalidValue;
    }
    if (p.batch == 0)
    {
        return cudaMemsetAsync(p.maxCount, 0, sizeof(int64_t), stream);
    }
    if (p.counts == nullptr)
    {
        return cudaErrorInvalidValue;
    }
    if (p.numTokens == 0)
    {
        cudaError_t const status = cudaMemsetAsync(p.counts, 0, sizeof(int32_t) * p.batch, stream);
        return status != cudaSuccess ? status : cudaMemsetAsync(p.maxCount, 0, sizeof(int64_t), stream);
    }
    if (p.confidence == nullptr || p.label == nullptr || p.index == nullptr || p.keptIndex == nullptr
        || p.workspace == nullptr || (p.channels > 0 && (p.tokens == nullptr || p.keptTokens == nullptr)))
    {
        return cudaErrorInvalidValue;
    }

    WorkspaceLayout const layout = workspaceLayout(p.batch, p.numTokens, p.numClasses);
    auto* ws = static_cast<unsigned char*>(p.workspace);
    auto* state = reinterpret_cast<uint8_t*>(ws + layout.stateOffset);
    auto* source = reinterpret_cast<int32_t*>(ws + layout.sourceOffset);
    auto* globalBest = layout.globalBest ? reinterpret_cast<unsigned long long*>(ws + layout.bestOffset) : nullptr;
    size_t const sharedBytes
        = (p.contextTopk > 0 && !layout.globalBest) ? sizeof(unsigned long long) * p.numClasses : 0;

    rankCompactKernel<<<p.batch, kRANK_THREADS, sharedBytes, stream>>>(p.confidence, p.label, p.index, p.numTokens,
        p.threshold, p.contextTopk, p.numClasses, state, source, globalBest, p.counts);
    cudaError_t const status = cudaGetLastError();
    if (status != cudaSuccess)
    {
        return status;
    }

    size_t const rowBytes = static_cast<size_t>(p.channels) * elementSize(p.tokenType);
    int32_t const vecBytes = pickVectorBytes(rowBytes, {p.tokens, p.keptTokens});
    int64_t const vecsPerRow = static_cast<int64_t>(rowBytes / vecBytes);
    return dispatchVector<GatherLaunch>(vecBytes, p, static_cast<int32_t const*>(source), vecsPerRow, stream);
}

} // namespace dtp
