// SPDX-License-Identifier: Apache-2.0
// The two dtp token ops on the CPU, plain C++17 (no OpenVINO types): the compute behind the
// OpenVINO extension ops, kept apart from the glue so that it reads like the contract
// (DESIGN.md section 2).
#ifndef DTP_OPENVINO_TOKEN_OPS_CPU_H
#define DTP_OPENVINO_TOKEN_OPS_CPU_H

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dtp
{
namespace cpu
{

struct SplitParams
{
    float threshold{0.0F};
    int64_t contextTopk{0};
    int64_t numClasses{0};
};

//! Which tokens of one image stay: keep[n] for n in [0, n). A token is kept iff index >= 0 and
//! (its confidence is NaN or <= threshold, or it is among the contextTopk most confident tokens
//! of its label; ties by lower position). NaN confidences and labels outside [0, numClasses)
//! take no context slot. Returns the kept count.
int64_t keepRow(float const* confidence, int32_t const* label, int32_t const* index, int64_t n,
    SplitParams const& params, std::vector<uint8_t>& keep);

//! Kept counts of every image of a (batch, n) split; keep receives batch x n flags.
std::vector<int64_t> keepMask(float const* confidence, int32_t const* label, int32_t const* index, int64_t batch,
    int64_t n, SplitParams const& params, std::vector<uint8_t>& keep);

//! Stable compaction of the kept rows of tokens (batch, n, rowBytes) into (batch, m, rowBytes),
//! padding rows zero and their index -1. m is at least every kept count.
void compact(uint8_t const* tokens, int32_t const* index, std::vector<uint8_t> const& keep, int64_t batch, int64_t n,
    size_t rowBytes, int64_t m, uint8_t* keptTokens, int32_t* keptIndex);

//! out = base with row index[b, m] replaced by updates[b, m] where 0 <= index < n; rows of
//! -1 are padding. Returns false when an index lies outside [-1, n) (nothing is written then
//! past the row bounds).
bool reconstruct(uint8_t const* base, uint8_t const* updates, int32_t const* index, int64_t batch, int64_t n,
    int64_t m, size_t rowBytes, uint8_t* out);

} // namespace cpu
} // namespace dtp

#endif // DTP_OPENVINO_TOKEN_OPS_CPU_H
