// SPDX-License-Identifier: Apache-2.0
//
// dtp::TokenReconstruct as a plain CUDA launcher (DESIGN.md section 2). No TensorRT dependency.
#ifndef DTP_PLUGINS_TOKEN_RECONSTRUCT_KERNEL_H
#define DTP_PLUGINS_TOKEN_RECONSTRUCT_KERNEL_H

#include "common/dtpCommon.h"

#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

namespace dtp
{

struct TokenReconstructParams
{
    int32_t batch{0};       //!< B
    int32_t numTokens{0};   //!< N, rows of base and out
    int32_t numUpdates{0};  //!< M, rows of updates and index (0 allowed)
    int32_t channels{0};    //!< D
    TokenType tokenType{TokenType::kFLOAT32}; //!< of base, updates and out

    void const* base{nullptr};        //!< [B, N, D]
    void const* updates{nullptr};     //!< [B, M, D]
    int32_t const* index{nullptr};    //!< [B, M]; -1 (any negative) = ignored row
    void* out{nullptr};               //!< [B, N, D]; may equal base (in place)

    void* workspace{nullptr};         //!< tokenReconstructWorkspaceSize(B, N) bytes
};

//! Bytes of scratch memory tokenReconstruct needs (an inverse map, B*N int32).
size_t tokenReconstructWorkspaceSize(int32_t batch, int32_t numTokens) noexcept;

//! Enqueue `out = base` with row index[b, m] replaced by updates[b, m] on `stream`; never
//! synchronises the host. Every output row is read once (from base or from updates) and written
//! once. Indices >= N are ignored; if an index repeats, which update wins is unspecified (as for
//! the reference's scatter). Returns cudaErrorInvalidValue for bad sizes or null pointers.
cudaError_t tokenReconstruct(TokenReconstructParams const& params, cudaStream_t stream);

} // namespace dtp

#endif // DTP_PLUGINS_TOKEN_RECONSTRUCT_KERNEL_H
