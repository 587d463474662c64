// SPDX-License-Identifier: Apache-2.0
//
// dtp::TokenSplit as a plain CUDA launcher (DESIGN.md section 2). No TensorRT dependency.
#ifndef DTP_PLUGINS_TOKEN_SPLIT_KERNEL_H
#define DTP_PLUGINS_TOKEN_SPLIT_KERNEL_H

#include "common/dtpCommon.h"

#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

namespace dtp
{

//! How the gathered rows of image b are laid out in the output buffers.
enum class TokenSplitLayout : int32_t
{
    //! Dense `[B, M, C]` / `[B, M]` with M = max kept count, computed on the device. This is the
    //! layout TensorRT expects for an output whose dimension is a size tensor.
    kPACKED = 0,
    //! `[B, N, C]` / `[B, N]`: every image padded to the capacity N, whatever M is.
    kPADDED = 1,
};

struct TokenSplitParams
{
    int32_t batch{0};      //!< B
    int32_t numTokens{0};  //!< N, also the capacity (upper bound of M) of the outputs
    int32_t channels{0};   //!< C
    TokenType tokenType{TokenType::kFLOAT32};
    float threshold{0.F};
    int32_t contextTopk{0}; //!< 0 = no context tokens
    int32_t numClasses{0};  //!< labels of confident tokens must lie in [0, numClasses)
    TokenSplitLayout layout{TokenSplitLayout::kPACKED};

    // Inputs (device).
    void const* tokens{nullptr};       //!< [B, N, C] float or half
    float const* confidence{nullptr};  //!< [B, N]
    int32_t const* label{nullptr};     //!< [B, N]
    int32_t const* index{nullptr};     //!< [B, N], -1 = padding

    // Outputs (device). Buffers are sized for the capacity: B*N*C elements and B*N indices.
    void* keptTokens{nullptr};         //!< see TokenSplitLayout; padding rows are zero
    int32_t* keptIndex{nullptr};       //!< original positions, -1 = padding
    int32_t* counts{nullptr};          //!< [B] kept count of every image
    int64_t* maxCount{nullptr};        //!< scalar M = max_b counts[b] (TensorRT's size tensor)

    void* workspace{nullptr};          //!< tokenSplitWorkspaceSize(B, N, numClasses) bytes
};

//! Bytes of scratch memory tokenSplit needs. Alignment: kWORKSPACE_ALIGNMENT.
size_t tokenSplitWorkspaceSize(int32_t batch, int32_t numTokens, int32_t numClasses) noexcept;

//! Enqueue the split on `stream`. Never synchronises the host; M stays on the device (read it
//! from `maxCount` after the stream is done if the host needs it). Returns cudaErrorInvalidValue
//! for bad sizes or null pointers, otherwise the launch status.
//!
//! A token is kept iff index >= 0 and (confidence <= threshold, or it is among the contextTopk
//! most confident tokens of its label in its image, ties broken by the lower position). NaN
//! confidences count as the most confident, as in torch.sort. Kept rows keep their order.
cudaError_t tokenSplit(TokenSplitParams const& params, cudaStream_t stream);

} // namespace dtp

#endif // DTP_PLUGINS_TOKEN_SPLIT_KERNEL_H
