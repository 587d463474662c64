// SPDX-License-Identifier: Apache-2.0
//
// PyTorch bindings of the two launchers, for the GPU tests and the micro-benchmark (built with
// torch.utils.cpp_extension.load). Not part of the plugin library.
#include "tokenReconstructPlugin/tokenReconstructKernel.h"
#include "tokenSplitPlugin/tokenSplitKernel.h"

#include <ATen/cuda/CUDAContext.h>
#include <torch/extension.h>

namespace
{

dtp::TokenType tokenType(torch::Tensor const& t)
{
    TORCH_CHECK(t.scalar_type() == torch::kFloat || t.scalar_type() == torch::kHalf,
        "tokens must be float32 or float16, got ", t.scalar_type());
    return t.scalar_type() == torch::kHalf ? dtp::TokenType::kFLOAT16 : dtp::TokenType::kFLOAT32;
}

void checkCuda(cudaError_t status, char const* what)
{
    TORCH_CHECK(status == cudaSuccess, what, " failed: ", cudaGetErrorString(status));
}

// Returns (kept_tokens_buffer [B, N, C], kept_index_buffer [B, N], counts [B], max_count [1]).
// The buffers hold a dense [B, M, C] / [B, M] at their start (packed) or the padded layout.
std::vector<torch::Tensor> splitRaw(torch::Tensor tokens, torch::Tensor confidence, torch::Tensor label,
    torch::Tensor index, double threshold, int64_t contextTopk, int64_t numClasses, bool padded)
{
    TORCH_CHECK(tokens.is_cuda() && tokens.dim() == 3, "tokens must be a CUDA (B, N, C) tensor");
    tokens = tokens.contiguous();
    confidence = confidence.to(torch::kFloat).contiguous();
    label = label.to(torch::kInt).contiguous();
    index = index.to(torch::kInt).contiguous();
    int64_t const B = tokens.size(0), N = tokens.size(1), C = tokens.size(2);
    TORCH_CHECK(confidence.sizes() == torch::IntArrayRef({B, N}) && label.sizes() == confidence.sizes()
            && index.sizes() == confidence.sizes(),
        "confidence, label, index must be (B, N)");
    auto kept = torch::empty_like(tokens);
    auto keptIndex = torch::empty({B, N}, index.options());
    auto counts = torch::empty({B}, index.options());
    auto maxCount = torch::empty({1}, index.options().dtype(torch::kLong));
    auto workspace = torch::empty({static_cast<int64_t>(dtp::tokenSplitWorkspaceSize(
                                      static_cast<int32_t>(B), static_cast<int32_t>(N), static_cast<int32_t>(numClasses)))
                                      + 1},
        tokens.options().dtype(torch::kByte));
    dtp::TokenSplitParams p;
    p.batch = static_cast<int32_t>(B);
    p.numTokens = static_cast<int32_t>(N);
    p.channels = static_cast<int32_t>(C);
    p.tokenType = tokenType(tokens);
    p.threshold = static_cast<float>(threshold);
    p.contextTopk = static_cast<int32_t>(contextTopk);
    p.numClasses = static_cast<int32_t>(numClasses);
    p.layout = padded ? dtp::TokenSplitLayout::kPADDED : dtp::TokenSplitLayout::kPACKED;
    p.tokens = tokens.data_ptr();
    p.confidence = confidence.data_ptr<float>();
    p.label = label.data_ptr<int32_t>();
    p.index = index.data_ptr<int32_t>();
    p.keptTokens = kept.data_ptr();
    p.keptIndex = keptIndex.data_ptr<int32_t>();
    p.counts = counts.data_ptr<int32_t>();
    p.maxCount = maxCount.data_ptr<int64_t>();
    p.workspace = workspace.data_ptr();
    checkCuda(dtp::tokenSplit(p, at::cuda::getCurrentCUDAStream()), "tokenSplit");
    return {kept, keptIndex, counts, maxCount};
}

// Same result as dtp_deploy.ops.reference.token_split: (kept_tokens [B, M, C], kept_index [B, M]).
std::vector<torch::Tensor> split(torch::Tensor tokens, torch::Tensor confidence, torch::Tensor label,
    torch::Tensor index, double threshold, int64_t contextTopk, int64_t numClasses)
{
    auto raw = splitRaw(tokens, confidence, label, index, threshold, contextTopk, numClasses, false);
    int64_t const B = tokens.size(0), N = tokens.size(1), C = tokens.size(2);
    int64_t const M = raw[3].item<int64_t>(); // the one host sync, as in the reference
    auto kept = raw[0].view({-1}).narrow(0, 0, B * M * C).view({B, M, C});
    auto keptIndex = raw[1].view({-1}).narrow(0, 0, B * M).view({B, M});
    (void) N;
    return {kept, keptIndex, raw[2]};
}

torch::Tensor reconstruct(torch::Tensor base, torch::Tensor updates, torch::Tensor index)
{
    TORCH_CHECK(base.is_cuda() && base.dim() == 3 && updates.dim() == 3 && index.dim() == 2,
        "expected CUDA base (B, N, D), updates (B, M, D), index (B, M)");
    base = base.contiguous();
    updates = updates.to(base.scalar_type()).contiguous();
    index = index.to(torch::kInt).contiguous();
    auto out = torch::empty_like(base);
    auto workspace = torch::empty(
        {static_cast<int64_t>(dtp::tokenReconstructWorkspaceSize(
             static_cast<int32_t>(base.size(0)), static_cast<int32_t>(base.size(1))))
            + 1},
        base.options().dtype(torch::kByte));
    dtp::TokenReconstructParams p;
    p.batch = static_cast<int32_t>(base.size(0));
    p.numTokens = static_cast<int32_t>(base.size(1));
    p.numUpdates = static_cast<int32_t>(updates.size(1));
    p.channels = static_cast<int32_t>(base.size(2));
    p.tokenType = tokenType(base);
    p.base = base.data_ptr();
    p.updates = updates.data_ptr();
    p.index = index.data_ptr<int32_t>();
    p.out = out.data_ptr();
    p.workspace = workspace.data_ptr();
    checkCuda(dtp::tokenReconstruct(p, at::cuda::getCurrentCUDAStream()), "tokenReconstruct");
    return out;
}

} // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("token_split", &split, "TokenSplit kernel: (kept_tokens, kept_index, counts)");
    m.def("token_split_raw", &splitRaw, "TokenSplit kernel without host sync: buffers, counts, max count");
    m.def("token_reconstruct", &reconstruct, "TokenReconstruct kernel");
}
