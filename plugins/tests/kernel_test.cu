// SPDX-License-Identifier: Apache-2.0
//
// Checks of the token kernels: the hand-worked edge cases of tests/op_cases.py, random inputs
// with the contract's edges mixed in (a confidence equal to the threshold, NaN, +-inf, -0.0,
// labels out of range), and two splits chained on the device, all against a deliberately naive
// CPU reference (O(N^2) ranks, no shared code with the kernels). Exit status: 0 all cases pass, 1 a mismatch, 2 a CUDA error,
// 77 no CUDA device (the convention test drivers use for "skipped").
#include "tokenReconstructPlugin/tokenReconstructKernel.h"
#include "tokenSplitPlugin/tokenSplitKernel.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace
{

using dtp::TokenType;

#define CHECK_CUDA(call)                                                                                               \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const status_ = (call);                                                                            \
        if (status_ != cudaSuccess)                                                                                    \
        {                                                                                                              \
            std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(status_));   \
            std::exit(2);                                                                                              \
        }                                                                                                              \
    } while (0)

template <typename T>
struct DeviceBuffer
{
    T* ptr{nullptr};
    explicit DeviceBuffer(size_t count)
    {
        CHECK_CUDA(cudaMalloc(&ptr, std::max<size_t>(count, 1) * sizeof(T)));
    }
    ~DeviceBuffer()
    {
        cudaFree(ptr);
    }
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;
};

template <typename T>
void upload(DeviceBuffer<T>& dst, std::vector<T> const& src)
{
    if (!src.empty())
    {
        CHECK_CUDA(cudaMemcpy(dst.ptr, src.data(), src.size() * sizeof(T), cudaMemcpyHostToDevice));
    }
}

template <typename T>
std::vector<T> download(DeviceBuffer<T> const& src, size_t count)
{
    std::vector<T> out(count);
    if (count > 0)
    {
        CHECK_CUDA(cudaMemcpy(out.data(), src.ptr, count * sizeof(T), cudaMemcpyDeviceToHost));
    }
    return out;
}

// The keep rule of DESIGN.md section 2 read literally: O(N^2) ranks, no code shared with the kernel.
// Kept positions per image.
std::vector<std::vector<int32_t>> referenceKept(std::vector<float> const& conf, std::vector<int32_t> const& label,
    std::vector<int32_t> const& index, int32_t B, int32_t N, float threshold, int32_t topk, int32_t numClasses)
{
    std::vector<std::vector<int32_t>> kept(B);
    for (int32_t b = 0; b < B; ++b)
    {
        size_t const r = static_cast<size_t>(b) * N;
        // Who may take a context slot: valid, a real number, a label in range.
        auto eligible = [&](int32_t n) {
            return index[r + n] >= 0 && !std::isnan(conf[r + n]) && label[r + n] >= 0 && label[r + n] < numClasses;
        };
        for (int32_t n = 0; n < N; ++n)
        {
            if (index[r + n] < 0)
            {
                continue;
            }
            bool keep = !(conf[r + n] > threshold); // equality and NaN stay
            if (!keep && topk > 0 && eligible(n))
            {
                int32_t rank = 0;
                for (int32_t m = 0; m < N; ++m)
                {
                    bool const ahead = conf[r + m] > conf[r + n] || (conf[r + m] == conf[r + n] && m < n);
                    rank += m != n && eligible(m) && label[r + m] == label[r + n] && ahead;
                }
                keep = rank < topk;
            }
            if (keep)
            {
                kept[b].push_back(n);
            }
        }
    }
    return kept;
}

//! One split's inputs on the host; tokens as raw bytes.
struct SplitInputs
{
    int32_t batch{0}, numTokens{0}, channels{0};
    TokenType type{TokenType::kFLOAT32};
    std::vector<uint8_t> tokens;
    std::vector<float> conf;
    std::vector<int32_t> label, index;
    size_t rowBytes() const
    {
        return static_cast<size_t>(channels) * dtp::elementSize(type);
    }
};

struct SplitAttrs
{
    float threshold;
    int32_t topk, numClasses;
    dtp::TokenSplitLayout layout;
};

//! The outputs a split must produce for `kept`, in `rows` rows per image (M packed, N padded).
struct SplitOutputs
{
    int32_t rows{0};
    int64_t maxCount{0};
    std::vector<int32_t> counts, keptIndex;
    std::vector<uint8_t> keptTokens;
};

SplitOutputs expectedOutputs(SplitInputs const& in, std::vector<std::vector<int32_t>> const& kept, int32_t rows)
{
    SplitOutputs out;
    out.rows = rows;
    size_t const rowBytes = in.rowBytes();
    out.keptTokens.assign(static_cast<size_t>(in.batch) * rows * rowBytes, 0);
    out.keptIndex.assign(static_cast<size_t>(in.batch) * rows, -1);
    for (int32_t b = 0; b < in.batch; ++b)
    {
        out.counts.push_back(static_cast<int32_t>(kept[b].size()));
        out.maxCount = std::max<int64_t>(out.maxCount, kept[b].size());
        for (size_t s = 0; s < kept[b].size(); ++s)
        {
            size_t const src = static_cast<size_t>(b) * in.numTokens + kept[b][s];
            size_t const dst = static_cast<size_t>(b) * rows + s;
            out.keptIndex[dst] = in.index[src];
            std::memcpy(out.keptTokens.data() + dst * rowBytes, in.tokens.data() + src * rowBytes, rowBytes);
        }
    }
    return out;
}

int32_t maxKept(std::vector<std::vector<int32_t>> const& kept)
{
    size_t m = 0;
    for (auto const& row : kept)
    {
        m = std::max(m, row.size());
    }
    return static_cast<int32_t>(m);
}

//! Device-resident split inputs, so that a split's outputs can feed the next split unchanged.
struct DeviceSplit
{
    int32_t batch, numTokens, channels;
    TokenType type;
    DeviceBuffer<uint8_t> tokens;
    DeviceBuffer<float> conf;
    DeviceBuffer<int32_t> label, index;
    DeviceSplit(int32_t b, int32_t n, int32_t c, TokenType t)
        : batch(b)
        , numTokens(n)
        , channels(c)
        , type(t)
        , tokens(static_cast<size_t>(b) * n * c * dtp::elementSize(t))
        , conf(static_cast<size_t>(b) * n)
        , label(static_cast<size_t>(b) * n)
        , index(static_cast<size_t>(b) * n)
    {
    }
};

//! Runs the kernel; its outputs land in `next` (tokens and index, capacity `numTokens` rows) and
//! the returned host copy (the first `rows` rows per image, rows = M packed or N padded).
SplitOutputs launchSplit(DeviceSplit const& in, SplitAttrs const& a, DeviceSplit& next)
{
    int32_t const B = in.batch, N = in.numTokens;
    size_t const rowBytes = static_cast<size_t>(in.channels) * dtp::elementSize(in.type);
    DeviceBuffer<int32_t> dCounts(B);
    DeviceBuffer<int64_t> dMax(1);
    DeviceBuffer<uint8_t> dWs(dtp::tokenSplitWorkspaceSize(B, N, a.numClasses));
    // Poison the outputs so unwritten padding shows up.
    CHECK_CUDA(cudaMemset(next.tokens.ptr, 0x5A, static_cast<size_t>(B) * N * rowBytes));
    CHECK_CUDA(cudaMemset(next.index.ptr, 0x5A, static_cast<size_t>(B) * N * sizeof(int32_t)));
    dtp::TokenSplitParams p;
    p.batch = B;
    p.numTokens = N;
    p.channels = in.channels;
    p.tokenType = in.type;
    p.threshold = a.threshold;
    p.contextTopk = a.topk;
    p.numClasses = a.numClasses;
    p.layout = a.layout;
    p.tokens = in.tokens.ptr;
    p.confidence = in.conf.ptr;
    p.label = in.label.ptr;
    p.index = in.index.ptr;
    p.keptTokens = next.tokens.ptr;
    p.keptIndex = next.index.ptr;
    p.counts = dCounts.ptr;
    p.maxCount = dMax.ptr;
    p.workspace = dWs.ptr;
    CHECK_CUDA(dtp::tokenSplit(p, nullptr));
    CHECK_CUDA(cudaDeviceSynchronize());
    SplitOutputs out;
    out.maxCount = download(dMax, 1)[0];
    out.counts = download(dCounts, B);
    out.rows = a.layout == dtp::TokenSplitLayout::kPACKED ? static_cast<int32_t>(out.maxCount) : N;
    out.keptTokens = download(next.tokens, static_cast<size_t>(B) * out.rows * rowBytes);
    out.keptIndex = download(next.index, static_cast<size_t>(B) * out.rows);
    return out;
}

void uploadSplit(DeviceSplit& d, SplitInputs const& in)
{
    upload(d.tokens, in.tokens);
    upload(d.conf, in.conf);
    upload(d.label, in.label);
    upload(d.index, in.index);
}

int compareSplit(std::string const& name, SplitOutputs const& got, SplitOutputs const& want, size_t rowBytes)
{
    int errors = 0;
    auto fail = [&](char const* what, size_t b, size_t s) {
        if (errors++ < 5)
        {
            std::fprintf(stderr, "  [%s] %s mismatch at image %zu slot %zu\n", name.c_str(), what, b, s);
        }
    };
    if (got.maxCount != want.maxCount)
    {
        std::fprintf(stderr, "  [%s] M = %lld, expected %lld\n", name.c_str(), static_cast<long long>(got.maxCount),
            static_cast<long long>(want.maxCount));
        return errors + 1;
    }
    for (size_t b = 0; b < want.counts.size(); ++b)
    {
        if (got.counts[b] != want.counts[b])
        {
            fail("count", b, 0);
        }
        for (size_t s = 0; s < static_cast<size_t>(want.rows) && errors < 50; ++s)
        {
            size_t const row = b * want.rows + s;
            if (got.keptIndex[row] != want.keptIndex[row])
            {
                fail(want.keptIndex[row] < 0 ? "padding kept_index" : "kept_index", b, s);
            }
            if (std::memcmp(got.keptTokens.data() + row * rowBytes, want.keptTokens.data() + row * rowBytes, rowBytes)
                != 0)
            {
                fail(want.keptIndex[row] < 0 ? "padding row" : "kept_tokens", b, s);
            }
        }
    }
    return errors;
}

struct SplitCase
{
    std::string name;
    int32_t batch, numTokens, channels;
    TokenType type;
    float threshold;
    int32_t topk, numClasses;
    double padFraction;       // share of index = -1
    double confidentFraction; // per image scaled by (b + 1) / B so images keep different counts
    bool ties;                // quantise confidences to create ties
    bool edges;               // mix in NaN, +-inf, -0.0, the threshold itself and out-of-range labels
    dtp::TokenSplitLayout layout;
};

//! Random inputs for `c`; `edges` mixes in the values the contract names.
SplitInputs randomInputs(SplitCase const& c, int32_t numTokens, std::mt19937& rng)
{
    SplitInputs in;
    in.batch = c.batch;
    in.numTokens = numTokens;
    in.channels = c.channels;
    in.type = c.type;
    int32_t const B = c.batch, N = numTokens;
    std::uniform_real_distribution<float> uni(0.F, 1.F);
    std::uniform_int_distribution<int32_t> cls(0, c.numClasses - 1);
    std::uniform_int_distribution<int32_t> byte(0, 255);
    in.tokens.resize(static_cast<size_t>(B) * N * in.rowBytes());
    for (auto& v : in.tokens)
    {
        v = static_cast<uint8_t>(byte(rng));
    }
    float const inf = std::numeric_limits<float>::infinity();
    float const specials[] = {std::numeric_limits<float>::quiet_NaN(), inf, -inf, -0.F, 0.F, c.threshold};
    in.conf.resize(static_cast<size_t>(B) * N);
    in.label.resize(in.conf.size());
    in.index.resize(in.conf.size());
    for (int32_t b = 0; b < B; ++b)
    {
        double const confident = c.confidentFraction >= 1.0 ? 1.0 : c.confidentFraction * (b + 1) / B;
        for (int32_t n = 0; n < N; ++n)
        {
            size_t const i = static_cast<size_t>(b) * N + n;
            bool const high = uni(rng) < confident;
            float value = high ? c.threshold + (1.F - c.threshold) * uni(rng) + 1e-3F : c.threshold * uni(rng);
            if (c.ties)
            {
                value = std::round(value * 8.F) / 8.F;
            }
            int32_t l = cls(rng);
            if (c.edges && uni(rng) < 0.1F)
            {
                value = specials[static_cast<size_t>(uni(rng) * 5.999F)];
            }
            if (c.edges && uni(rng) < 0.05F)
            {
                l = uni(rng) < 0.5F ? -1 : c.numClasses + static_cast<int32_t>(uni(rng) * 3.F);
            }
            in.conf[i] = value;
            in.label[i] = l;
            in.index[i] = uni(rng) < c.padFraction ? -1 : n;
        }
    }
    return in;
}

int runSplit(SplitCase const& c, std::mt19937& rng)
{
    SplitInputs const in = randomInputs(c, c.numTokens, rng);
    SplitAttrs const attrs{c.threshold, c.topk, c.numClasses, c.layout};
    auto const kept = referenceKept(in.conf, in.label, in.index, in.batch, in.numTokens, c.threshold, c.topk,
        c.numClasses);
    int32_t const rows = c.layout == dtp::TokenSplitLayout::kPACKED ? maxKept(kept) : in.numTokens;
    DeviceSplit dIn(in.batch, in.numTokens, in.channels, in.type), dOut(in.batch, in.numTokens, in.channels, in.type);
    uploadSplit(dIn, in);
    SplitOutputs const got = launchSplit(dIn, attrs, dOut);
    int const errors = compareSplit(c.name, got, expectedOutputs(in, kept, rows), in.rowBytes());
    std::printf("%-4s split %-28s B=%d N=%d C=%d %s M=%d\n", errors ? "FAIL" : "ok", c.name.c_str(), in.batch,
        in.numTokens, in.channels, c.type == TokenType::kFLOAT16 ? "half" : "float", maxKept(kept));
    return errors;
}

//! Two splits chained the way the exported graphs chain them: the first split's outputs, left on
//! the device, are the second split's tokens and index (its index is the first one's kept_index,
//! padding included); the second split gets fresh confidences and labels for those rows.
int runChain(SplitCase const& c, SplitAttrs const& second, std::mt19937& rng)
{
    SplitInputs const in = randomInputs(c, c.numTokens, rng);
    SplitAttrs const first{c.threshold, c.topk, c.numClasses, c.layout};
    auto const kept1 = referenceKept(in.conf, in.label, in.index, in.batch, in.numTokens, c.threshold, c.topk,
        c.numClasses);
    int32_t const rows1 = c.layout == dtp::TokenSplitLayout::kPACKED ? maxKept(kept1) : in.numTokens;
    SplitOutputs const want1 = expectedOutputs(in, kept1, rows1);

    // Stage 2 on the host: the expected stage-1 outputs with new confidences and labels.
    SplitCase c2 = c;
    c2.threshold = second.threshold;
    c2.topk = second.topk;
    c2.numClasses = second.numClasses;
    SplitInputs in2 = randomInputs(c2, rows1, rng);
    in2.tokens = want1.keptTokens;
    in2.index = want1.keptIndex;
    auto const kept2 = referenceKept(in2.conf, in2.label, in2.index, in2.batch, rows1, second.threshold, second.topk,
        second.numClasses);
    int32_t const rows2 = second.layout == dtp::TokenSplitLayout::kPACKED ? maxKept(kept2) : rows1;

    DeviceSplit dIn(in.batch, in.numTokens, in.channels, in.type);
    DeviceSplit dMid(in.batch, in.numTokens, in.channels, in.type);
    uploadSplit(dIn, in);
    SplitOutputs const got1 = launchSplit(dIn, first, dMid);
    int errors = compareSplit(c.name + " stage 1", got1, want1, in.rowBytes());
    if (errors == 0)
    {
        // Only the confidences and labels are new: tokens and index stay where stage 1 wrote them.
        DeviceSplit dStage2(in.batch, rows1, in.channels, in.type);
        CHECK_CUDA(cudaMemcpy(dStage2.tokens.ptr, dMid.tokens.ptr, in2.tokens.size(), cudaMemcpyDeviceToDevice));
        CHECK_CUDA(cudaMemcpy(
            dStage2.index.ptr, dMid.index.ptr, in2.index.size() * sizeof(int32_t), cudaMemcpyDeviceToDevice));
        upload(dStage2.conf, in2.conf);
        upload(dStage2.label, in2.label);
        DeviceSplit dOut(in.batch, rows1, in.channels, in.type);
        SplitOutputs const got2 = launchSplit(dStage2, second, dOut);
        errors += compareSplit(c.name + " stage 2", got2, expectedOutputs(in2, kept2, rows2), in.rowBytes());
    }
    std::printf("%-4s chain %-28s B=%d N=%d -> M1=%d -> M2=%d\n", errors ? "FAIL" : "ok", c.name.c_str(), in.batch,
        in.numTokens, rows1, maxKept(kept2));
    return errors;
}

//! The hand-worked cases of tests/op_cases.py (EDGE_CASES): kept positions worked out from the
//! contract by hand, not by the reference above.
struct EdgeCase
{
    char const* name;
    int32_t batch, numTokens;
    std::vector<float> conf;
    std::vector<int32_t> label, index; // index empty: the identity grid
    float threshold;
    int32_t topk, numClasses;
    std::vector<std::vector<int32_t>> kept;
};

int runEdgeCase(EdgeCase const& e)
{
    SplitInputs in;
    in.batch = e.batch;
    in.numTokens = e.numTokens;
    in.channels = 3;
    in.type = TokenType::kFLOAT32;
    in.conf = e.conf;
    in.label = e.label;
    in.index = e.index;
    if (in.index.empty())
    {
        for (int32_t b = 0; b < e.batch; ++b)
        {
            for (int32_t n = 0; n < e.numTokens; ++n)
            {
                in.index.push_back(n);
            }
        }
    }
    std::vector<float> rows(static_cast<size_t>(e.batch) * e.numTokens * 3);
    for (size_t i = 0; i < rows.size(); ++i)
    {
        rows[i] = static_cast<float>(i + 1); // distinct, non-zero rows
    }
    in.tokens.resize(rows.size() * sizeof(float));
    std::memcpy(in.tokens.data(), rows.data(), in.tokens.size());

    int errors = 0;
    if (referenceKept(in.conf, in.label, in.index, e.batch, e.numTokens, e.threshold, e.topk, e.numClasses) != e.kept)
    {
        std::fprintf(stderr, "  [%s] the CPU reference disagrees with the hand-worked answer\n", e.name);
        ++errors;
    }
    for (auto layout : {dtp::TokenSplitLayout::kPACKED, dtp::TokenSplitLayout::kPADDED})
    {
        int32_t const rowCount = layout == dtp::TokenSplitLayout::kPACKED ? maxKept(e.kept) : e.numTokens;
        DeviceSplit dIn(e.batch, e.numTokens, 3, in.type), dOut(e.batch, e.numTokens, 3, in.type);
        uploadSplit(dIn, in);
        SplitOutputs const got = launchSplit(dIn, SplitAttrs{e.threshold, e.topk, e.numClasses, layout}, dOut);
        errors += compareSplit(e.name, got, expectedOutputs(in, e.kept, rowCount), in.rowBytes());
    }
    std::printf("%-4s edge  %s\n", errors ? "FAIL" : "ok", e.name);
    return errors;
}

std::vector<EdgeCase> edgeCases()
{
    float const nan = std::numeric_limits<float>::quiet_NaN();
    float const inf = std::numeric_limits<float>::infinity();
    float const t09 = 0.9F; // the float32 threshold the op compares with
    float const above09 = std::nextafter(t09, 1.F), below09 = std::nextafter(t09, 0.F);
    return {
        {"nan-is-kept-takes-no-slot", 1, 5, {0.95F, nan, 0.99F, 0.97F, 0.2F}, {0, 0, 0, 0, 0}, {}, 0.5F, 2, 1,
            {{1, 2, 3, 4}}},
        {"equal-to-threshold-stays", 1, 4, {0.5F, 0.500001F, 0.49F, 0.6F}, {0, 0, 0, 0}, {}, 0.5F, 0, 1, {{0, 2}}},
        {"equal-to-float32-threshold-stays", 1, 4, {t09, above09, below09, 0.95F}, {0, 0, 0, 0}, {}, 0.9F, 0, 1,
            {{0, 2}}},
        {"plus-inf-confident-minus-inf-not", 1, 4, {inf, -inf, 0.7F, inf}, {0, 0, 0, 0}, {}, 0.5F, 0, 1, {{1}}},
        {"inf-ties-go-to-lower-position", 1, 4, {inf, -inf, 0.7F, inf}, {0, 0, 0, 0}, {}, 0.5F, 1, 1, {{0, 1}}},
        {"label-out-of-range-takes-no-slot", 1, 6, {0.9F, 0.8F, 0.95F, 0.99F, 0.7F, 0.1F}, {0, 1, -1, 2, 1, 7}, {},
            0.5F, 1, 2, {{0, 1, 5}}},
        {"ties-go-to-lower-position", 1, 4, {0.95F, 0.99F, 0.99F, 0.99F}, {0, 0, 0, 0}, {}, 0.5F, 2, 1, {{1, 2}}},
        {"ties-per-label", 1, 6, {0.9F, 0.9F, 0.9F, 0.9F, 0.9F, 0.9F}, {1, 0, 1, 0, 1, 0}, {}, 0.5F, 2, 2,
            {{0, 1, 2, 3}}},
        {"minus-zero-ties-plus-zero", 1, 3, {0.F, -0.F, -0.F}, {0, 0, 0}, {}, -0.5F, 1, 1, {{0}}},
        {"padding-takes-no-slot", 1, 5, {0.99F, 0.9F, 0.95F, 0.98F, 0.2F}, {0, 0, 0, 0, 0}, {-1, 11, 12, -1, 14},
            0.5F, 1, 1, {{2, 4}}},
        {"duplicate-indices-are-carried", 1, 3, {0.1F, 0.9F, 0.2F}, {0, 0, 0}, {3, 3, 3}, 0.5F, 0, 1, {{0, 2}}},
        {"everything-exits-m-zero", 2, 2, {0.9F, 0.8F, 0.7F, 1.F}, {0, 0, 0, 0}, {}, 0.5F, 0, 1, {{}, {}}},
        {"all-padding-row", 2, 3, {0.1F, 0.9F, 0.2F, 0.1F, 0.1F, 0.1F}, {0, 0, 0, 0, 0, 0}, {0, 1, 2, -1, -1, -1},
            0.5F, 0, 1, {{0, 2}, {}}},
        {"batch3-mixed-counts", 3, 4, {0.1F, 0.2F, 0.3F, 0.4F, 0.9F, 0.1F, 0.9F, 0.9F, 0.9F, 0.9F, 0.9F, 0.9F},
            {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {}, 0.5F, 1, 1, {{0, 1, 2, 3}, {0, 1}, {0}}},
        {"context-only", 1, 4, {0.3F, 0.1F, 0.2F, 0.4F}, {0, 0, 1, 1}, {}, -1.F, 1, 2, {{0, 3}}},
        {"all-nan", 1, 2, {nan, nan}, {0, 0}, {}, 0.5F, 5, 1, {{0, 1}}},
    };
}

struct ReconstructCase
{
    std::string name;
    int32_t batch, numTokens, numUpdates, channels;
    TokenType type;
    double padFraction;
};

int runReconstruct(ReconstructCase const& c, std::mt19937& rng)
{
    int32_t const B = c.batch, N = c.numTokens, M = c.numUpdates, D = c.channels;
    size_t const rowBytes = static_cast<size_t>(D) * dtp::elementSize(c.type);
    std::uniform_int_distribution<int32_t> byte(0, 255);
    std::uniform_real_distribution<float> uni(0.F, 1.F);
    std::vector<uint8_t> base(static_cast<size_t>(B) * N * rowBytes), updates(static_cast<size_t>(B) * M * rowBytes);
    for (auto& v : base)
    {
        v = static_cast<uint8_t>(byte(rng));
    }
    for (auto& v : updates)
    {
        v = static_cast<uint8_t>(byte(rng));
    }
    std::vector<int32_t> index(static_cast<size_t>(B) * M);
    std::vector<int32_t> perm(N);
    for (int32_t b = 0; b < B; ++b)
    {
        for (int32_t n = 0; n < N; ++n)
        {
            perm[n] = n;
        }
        std::shuffle(perm.begin(), perm.end(), rng);
        for (int32_t m = 0; m < M; ++m)
        {
            index[static_cast<size_t>(b) * M + m] = uni(rng) < c.padFraction ? -1 : perm[m];
        }
    }
    std::vector<uint8_t> expect = base;
    for (int32_t b = 0; b < B; ++b)
    {
        for (int32_t m = 0; m < M; ++m)
        {
            int32_t const target = index[static_cast<size_t>(b) * M + m];
            if (target >= 0)
            {
                std::memcpy(expect.data() + (static_cast<size_t>(b) * N + target) * rowBytes,
                    updates.data() + (static_cast<size_t>(b) * M + m) * rowBytes, rowBytes);
            }
        }
    }
    DeviceBuffer<uint8_t> dBase(base.size()), dUpdates(updates.size()), dOut(base.size());
    DeviceBuffer<int32_t> dIndex(index.size());
    DeviceBuffer<uint8_t> dWs(dtp::tokenReconstructWorkspaceSize(B, N));
    upload(dBase, base);
    upload(dUpdates, updates);
    upload(dIndex, index);
    CHECK_CUDA(cudaMemset(dOut.ptr, 0x5A, base.size()));
    dtp::TokenReconstructParams p;
    p.batch = B;
    p.numTokens = N;
    p.numUpdates = M;
    p.channels = D;
    p.tokenType = c.type;
    p.base = dBase.ptr;
    p.updates = dUpdates.ptr;
    p.index = dIndex.ptr;
    p.out = dOut.ptr;
    p.workspace = dWs.ptr;
    CHECK_CUDA(dtp::tokenReconstruct(p, nullptr));
    CHECK_CUDA(cudaDeviceSynchronize());
    std::vector<uint8_t> const got = download(dOut, base.size());
    std::vector<uint8_t> const baseAfter = download(dBase, base.size());
    int errors = 0;
    if (got != expect)
    {
        std::fprintf(stderr, "  [%s] output differs from the reference\n", c.name.c_str());
        ++errors;
    }
    if (baseAfter != base)
    {
        std::fprintf(stderr, "  [%s] base was modified\n", c.name.c_str());
        ++errors;
    }
    std::printf("%-4s reconstruct %-22s B=%d N=%d M=%d D=%d %s\n", errors ? "FAIL" : "ok", c.name.c_str(), B, N, M, D,
        c.type == TokenType::kFLOAT16 ? "half" : "float");
    return errors;
}

} // namespace

int main()
{
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
    {
        std::printf("no CUDA device: kernel tests skipped\n");
        return 77;
    }
    std::mt19937 rng(1234);
    using L = dtp::TokenSplitLayout;
    TokenType const F = TokenType::kFLOAT32, H = TokenType::kFLOAT16;
    std::vector<SplitCase> const splits = {
        {"vit-t one image", 1, 1024, 192, F, 0.9F, 5, 150, 0.0, 0.6, false, false, L::kPACKED},
        {"batch different counts", 4, 1024, 768, H, 0.9F, 5, 150, 0.0, 0.9, false, false, L::kPACKED},
        {"padding + ties", 3, 1024, 384, F, 0.9F, 5, 19, 0.2, 0.8, true, false, L::kPACKED},
        {"M=0", 2, 512, 192, F, 0.5F, 0, 10, 0.0, 1.0, false, false, L::kPACKED},
        {"M=0 all padding", 2, 256, 64, H, 0.5F, 5, 10, 1.0, 0.5, false, false, L::kPACKED},
        {"M=N", 3, 1024, 256, H, 2.0F, 5, 150, 0.0, 0.0, false, false, L::kPACKED},
        {"odd C half", 2, 777, 193, H, 0.9F, 5, 150, 0.1, 0.7, false, false, L::kPACKED},
        {"odd C float", 2, 300, 3, F, 0.9F, 2, 7, 0.0, 0.7, true, false, L::kPACKED},
        {"vit-l N=4096", 2, 4096, 1024, F, 0.95F, 5, 150, 0.0, 0.7, true, false, L::kPACKED},
        {"N=5000 one class", 2, 5000, 768, H, 0.9F, 5, 1, 0.0, 0.95, false, false, L::kPACKED},
        {"many classes (global)", 2, 2048, 192, F, 0.9F, 3, 6000, 0.0, 0.8, false, false, L::kPACKED},
        {"large topk", 2, 1024, 64, F, 0.9F, 40, 4, 0.0, 0.9, true, false, L::kPACKED},
        // Threshold 0.5 is a multiple of 1/8: the quantised ties land exactly on it.
        {"edges: equality nan inf labels", 3, 1024, 128, F, 0.5F, 5, 5, 0.1, 0.8, true, true, L::kPACKED},
        {"edges half one class", 2, 2048, 96, H, 0.75F, 3, 1, 0.0, 0.9, true, true, L::kPACKED},
        {"edges many classes (global)", 2, 1024, 64, F, 0.5F, 2, 5000, 0.0, 0.8, true, true, L::kPACKED},
        {"padded layout", 3, 1024, 768, H, 0.9F, 5, 150, 0.1, 0.8, false, false, L::kPADDED},
        {"padded layout edges", 3, 512, 64, F, 0.5F, 5, 7, 0.1, 0.8, true, true, L::kPADDED},
    };
    // Chains: DToP-like (context top-5 both times), DoViT-like (no context), the second split
    // keeping nothing (M = 0), and the padded layout where stage 2 sees N rows.
    struct Chain
    {
        SplitCase first;
        SplitAttrs second;
    };
    std::vector<Chain> const chains = {
        {{"dtop batch 3", 3, 1024, 768, H, 0.9F, 5, 150, 0.0, 0.8, true, true, L::kPACKED},
            {0.5F, 5, 150, L::kPACKED}},
        {{"dovit batch 3", 3, 1024, 384, F, 0.5F, 0, 19, 0.0, 0.9, true, true, L::kPACKED},
            {0.5F, 0, 19, L::kPACKED}},
        {{"second keeps nothing", 2, 512, 64, F, 0.9F, 5, 10, 0.0, 0.5, false, false, L::kPACKED},
            {-2.F, 0, 10, L::kPACKED}},
        {{"padded layout", 3, 512, 128, H, 0.5F, 5, 7, 0.1, 0.8, true, true, L::kPADDED},
            {0.5F, 5, 7, L::kPADDED}},
    };
    std::vector<ReconstructCase> const reconstructs = {
        {"M<N", 4, 1024, 600, 768, F, 0.1},
        {"M=N", 2, 1024, 1024, 1024, H, 0.0},
        {"M=0", 2, 1024, 0, 768, F, 0.0},
        {"all padding", 2, 512, 256, 192, H, 1.0},
        {"odd D", 3, 777, 400, 151, H, 0.2},
        {"logit canvas K=150", 2, 4096, 2000, 150, F, 0.0},
        {"N=4096 D=1024", 2, 4096, 3000, 1024, H, 0.05},
    };
    int failures = 0;
    for (auto const& e : edgeCases())
    {
        failures += runEdgeCase(e) != 0;
    }
    for (auto const& c : splits)
    {
        failures += runSplit(c, rng) != 0;
    }
    for (auto const& chain : chains)
    {
        failures += runChain(chain.first, chain.second, rng) != 0;
    }
    for (auto const& c : reconstructs)
    {
        failures += runReconstruct(c, rng) != 0;
    }
    std::printf("%d case(s) failed\n", failures);
    return failures == 0 ? 0 : 1;
}
