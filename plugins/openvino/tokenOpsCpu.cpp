// SPDX-License-Identifier: Apache-2.0
#include "tokenOpsCpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

namespace dtp
{
namespace cpu
{

int64_t keepRow(float const* confidence, int32_t const* label, int32_t const* index, int64_t n,
    SplitParams const& params, std::vector<uint8_t>& keep)
{
    keep.assign(static_cast<size_t>(n), 0);
    // Candidates for a context slot: valid, a real label, a meaningful score.
    std::vector<int64_t> candidates;
    for (int64_t i = 0; i < n; ++i)
    {
        if (index[i] < 0)
        {
            continue;
        }
        float const c = confidence[i];
        // NaN is "not confident": it stays, whatever the threshold.
        if (std::isnan(c) || c <= params.threshold)
        {
            keep[i] = 1;
        }
        if (params.contextTopk > 0 && !std::isnan(c) && label[i] >= 0 && label[i] < params.numClasses)
        {
            candidates.push_back(i);
        }
    }
    if (!candidates.empty())
    {
        // (label, confidence descending, position ascending); a stable sort on the first two
        // keys keeps the positions ascending among equals.
        std::stable_sort(candidates.begin(), candidates.end(), [&](int64_t a, int64_t b) {
            if (label[a] != label[b])
            {
                return label[a] < label[b];
            }
            return confidence[a] > confidence[b];
        });
        int64_t rank = 0;
        for (size_t j = 0; j < candidates.size(); ++j)
        {
            rank = (j > 0 && label[candidates[j]] == label[candidates[j - 1]]) ? rank + 1 : 0;
            if (rank < params.contextTopk)
            {
                keep[candidates[j]] = 1;
            }
        }
    }
    return std::accumulate(keep.begin(), keep.end(), int64_t{0});
}

std::vector<int64_t> keepMask(float const* confidence, int32_t const* label, int32_t const* index, int64_t batch,
    int64_t n, SplitParams const& params, std::vector<uint8_t>& keep)
{
    std::vector<int64_t> counts(static_cast<size_t>(batch), 0);
    keep.assign(static_cast<size_t>(batch * n), 0);
    std::vector<uint8_t> row;
    for (int64_t b = 0; b < batch; ++b)
    {
        counts[b] = keepRow(confidence + b * n, label + b * n, index + b * n, n, params, row);
        std::copy(row.begin(), row.end(), keep.begin() + b * n);
    }
    return counts;
}

void compact(uint8_t const* tokens, int32_t const* index, std::vector<uint8_t> const& keep, int64_t batch, int64_t n,
    size_t rowBytes, int64_t m, uint8_t* keptTokens, int32_t* keptIndex)
{
    if (m > 0)
    {
        std::memset(keptTokens, 0, static_cast<size_t>(batch * m) * rowBytes);
    }
    std::fill(keptIndex, keptIndex + batch * m, -1);
    for (int64_t b = 0; b < batch; ++b)
    {
        int64_t out = 0;
        for (int64_t i = 0; i < n && out < m; ++i)
        {
            if (keep[b * n + i])
            {
                std::memcpy(keptTokens + (b * m + out) * rowBytes, tokens + (b * n + i) * rowBytes, rowBytes);
                keptIndex[b * m + out] = index[b * n + i];
                ++out;
            }
        }
    }
}

bool reconstruct(uint8_t const* base, uint8_t const* updates, int32_t const* index, int64_t batch, int64_t n,
    int64_t m, size_t rowBytes, uint8_t* out)
{
    if (out != base && batch * n > 0)
    {
        std::memcpy(out, base, static_cast<size_t>(batch * n) * rowBytes);
    }
    bool inRange = true;
    for (int64_t b = 0; b < batch; ++b)
    {
        for (int64_t j = 0; j < m; ++j)
        {
            int32_t const target = index[b * m + j];
            if (target < 0)
            {
                continue;
            }
            if (target >= n)
            {
                inRange = false;
                continue;
            }
            std::memcpy(out + (b * n + target) * rowBytes, updates + (b * m + j) * rowBytes, rowBytes);
        }
    }
    return inRange;
}

} // namespace cpu
} // namespace dtp
