// SPDX-License-Identifier: Apache-2.0
//
// Small host/device helpers shared by the token kernels. No TensorRT dependency: the kernels are
// built and tested without it.
#ifndef DTP_PLUGINS_COMMON_DTP_COMMON_H
#define DTP_PLUGINS_COMMON_DTP_COMMON_H

#include <cstddef>
#include <cstdint>

namespace dtp
{

//! Element type of the token / feature tensors. The kernels only move rows, so they never do
//! arithmetic on these values: the type only decides the row size in bytes.
enum class TokenType : int32_t
{
    kFLOAT32 = 0,
    kFLOAT16 = 1,
};

constexpr size_t elementSize(TokenType type) noexcept
{
    return type == TokenType::kFLOAT16 ? 2 : 4;
}

//! Sub-buffers of a workspace start on this boundary so vector loads and 64-bit atomics are legal.
constexpr size_t kWORKSPACE_ALIGNMENT = 256;

constexpr size_t alignUp(size_t bytes, size_t alignment = kWORKSPACE_ALIGNMENT) noexcept
{
    return (bytes + alignment - 1) / alignment * alignment;
}

} // namespace dtp

#endif // DTP_PLUGINS_COMMON_DTP_COMMON_H
