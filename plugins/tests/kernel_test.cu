// SPDX-License-Identifier: Apache-2.0
//
// Randomised checks of the token kernels against a deliberately naive CPU reference (O(N^2) ranks,
// no shared code with the kernels). Exit status: 0 all cases pass, 1 a mismatch, 2 a CUDA error,
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

// "a outranks b" in the reference order: more confident first, NaN most confident, ties -> lower position.
bool outranks(float ca, int32_t a, float cb, int32_t b)
{
    bool const nanA = std::isnan(ca);
    bool const nanB = std::isnan(cb);
    if (nanA != nanB)
    {
        return nanA;
    }
    if (!nanA && ca != cb)
    {
        return ca > cb;
    }
    return a < b;
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
    bool nans;
    dtp::TokenSplitLayout layout;
};

int runSplit(SplitCase const& c, std::mt19937& rng)
{
    int32_t const B = c.batch, N = c.numTokens, C = c.channels;
    size_t const rowBytes = static_cast<size_t>(C) * dtp::elementSize(c.type);
    std::uniform_real_distribution<float> uni(0.F, 1.F);
    std::uniform_int_distribution<int32_t> cls(0, c.numClasses - 1);
    std::uniform_int_distribution<int32_t> byte(0, 255);

    std::vector<uint8_t> tokens(static_cast<size_t>(B) * N * rowBytes);
    for (auto& v : tokens)
    {
        v = static_cast<uint8_t>(byte(rng));
    }
    std::vector<float> conf(static_cast<size_t>(B) * N);
    std::vector<int32_t> label(conf.size()), index(conf.size());
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
            if (c.nans && uni(rng) < 0.02F)
            {
                value = std::numeric_limits<float>::quiet_NaN();
            }
            conf[i] = value;
            label[i] = cls(rng);
            index[i] = uni(rng) < c.padFraction ? -1 : n;
        }
    }

    // Reference.
    std::vector<int32_t> expectCount(B, 0);
    std::vector<std::vector<int32_t>> kept(B);
    for (int32_t b = 0; b < B; ++b)
    {
        size_t const r = static_cast<size_t>(b) * N;
        for (int32_t n = 0; n < N; ++n)
        {
            if (index[r + n] < 0)
            {
                continue;
            }
            bool keep = conf[r + n] <= c.threshold;
            if (!keep && c.topk > 0)
            {
                int32_t rank = 0;
                for (int32_t m = 0; m < N; ++m)
                {
                    rank += index[r + m] >= 0 && label[r + m] == label[r + n] && m != n
                        && outranks(conf[r + m], m, conf[r + n], n);
                }
                keep = rank < c.topk;
            }
            if (keep)
            {
                kept[b].push_back(n);
            }
        }
        expectCount[b] = static_cast<int32_t>(kept[b].size());
    }
    int32_t expectM = 0;
    for (int32_t v : expectCount)
    {
        expectM = std::max(expectM, v);
    }

    DeviceBuffer<uint8_t> dTokens(tokens.size()), dOut(tokens.size());
    DeviceBuffer<float> dConf(conf.size());
    DeviceBuffer<int32_t> dLabel(conf.size()), dIndex(conf.size()), dKeptIndex(conf.size()), dCounts(B);
    DeviceBuffer<int64_t> dMax(1);
    DeviceBuffer<uint8_t> dWs(dtp::tokenSplitWorkspaceSize(B, N, c.numClasses));
    upload(dTokens, tokens);
    upload(dConf, conf);
    upload(dLabel, label);
    upload(dIndex, index);
    // Poison the outputs so unwritten padding shows up.
    CHECK_CUDA(cudaMemset(dOut.ptr, 0x5A, tokens.size()));
    CHECK_CUDA(cudaMemset(dKeptIndex.ptr, 0x5A, conf.size() * sizeof(int32_t)));

    dtp::TokenSplitParams p;
    p.batch = B;
    p.numTokens = N;
    p.channels = C;
    p.tokenType = c.type;
    p.threshold = c.threshold;
    p.contextTopk = c.topk;
    p.numClasses = c.numClasses;
    p.layout = c.layout;
    p.tokens = dTokens.ptr;
    p.confidence = dConf.ptr;
    p.label = dLabel.ptr;
    p.index = dIndex.ptr;
    p.keptTokens = dOut.ptr;
    p.keptIndex = dKeptIndex.ptr;
    p.counts = dCounts.ptr;
    p.maxCount = dMax.ptr;
    p.workspace = dWs.ptr;
    CHECK_CUDA(dtp::tokenSplit(p, nullptr));
    CHECK_CUDA(cudaDeviceSynchronize());

    int64_t const gotM = download(dMax, 1)[0];
    std::vector<int32_t> const gotCounts = download(dCounts, B);
    int32_t const rows = c.layout == dtp::TokenSplitLayout::kPACKED ? expectM : N;
    std::vector<uint8_t> const gotTokens = download(dOut, static_cast<size_t>(B) * rows * rowBytes);
    std::vector<int32_t> const gotIndex = download(dKeptIndex, static_cast<size_t>(B) * rows);

    int errors = 0;
    auto fail = [&](char const* what, int32_t b, int32_t s) {
        if (errors++ < 5)
        {
            std::fprintf(stderr, "  [%s] %s mismatch at image %d slot %d\n", c.name.c_str(), what, b, s);
        }
    };
    if (gotM != expectM)
    {
        std::fprintf(stderr, "  [%s] M = %lld, expected %d\n", c.name.c_str(), static_cast<long long>(gotM), expectM);
        ++errors;
    }
    for (int32_t b = 0; b < B; ++b)
    {
        if (gotCounts[b] != expectCount[b])
        {
            fail("count", b, -1);
        }
        for (int32_t s = 0; s < rows && errors < 50; ++s)
        {
            size_t const row = static_cast<size_t>(b) * rows + s;
            uint8_t const* got = gotTokens.data() + row * rowBytes;
            if (s < expectCount[b])
            {
                int32_t const n = kept[b][s];
                if (gotIndex[row] != index[static_cast<size_t>(b) * N + n])
                {
                    fail("kept_index", b, s);
                }
                if (std::memcmp(got, tokens.data() + (static_cast<size_t>(b) * N + n) * rowBytes, rowBytes) != 0)
                {
                    fail("kept_tokens", b, s);
                }
            }
            else
            {
                if (gotIndex[row] != -1)
                {
                    fail("padding kept_index", b, s);
                }
                for (size_t k = 0; k < rowBytes; ++k)
                {
                    if (got[k] != 0)
                    {
                        fail("padding row", b, s);
                        break;
                    }
                }
            }
        }
    }
    std::printf("%-4s split %-28s B=%d N=%d C=%d %s M=%d\n", errors ? "FAIL" : "ok", c.name.c_str(), B, N, C,
        c.type == TokenType::kFLOAT16 ? "half" : "float", expectM);
    return errors;
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
        {"nan confidences", 2, 1024, 128, F, 0.9F, 5, 5, 0.0, 0.8, true, true, L::kPACKED},
        {"padded layout", 3, 1024, 768, H, 0.9F, 5, 150, 0.1, 0.8, false, false, L::kPADDED},
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
    for (auto const& c : splits)
    {
        failures += runSplit(c, rng) != 0;
    }
    for (auto const& c : reconstructs)
    {
        failures += runReconstruct(c, rng) != 0;
    }
    std::printf("%d case(s) failed\n", failures);
    return failures == 0 ? 0 : 1;
}
