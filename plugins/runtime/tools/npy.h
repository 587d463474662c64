// SPDX-License-Identifier: Apache-2.0
// Minimal .npy reading and writing (little-endian, C order; uint8, int32, float32) for the
// check tool that compares this runtime with the Python one.
#ifndef DTP_RUNTIME_NPY_H
#define DTP_RUNTIME_NPY_H

#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace npy
{

struct Array
{
    std::string descr; // "|u1", "<i4", "<f4"
    std::vector<int64_t> shape;
    std::vector<char> data;

    template <typename T>
    T const* as(char const* expected) const
    {
        if (descr != expected)
        {
            throw std::runtime_error("npy: dtype " + descr + ", expected " + expected);
        }
        return reinterpret_cast<T const*>(data.data());
    }
};

inline Array load(std::string const& path)
{
    std::ifstream file(path, std::ios::binary);
    char magic[8] = {};
    if (!file.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    {
        throw std::runtime_error(path + " is not a .npy file");
    }
    uint32_t headerLen = 0;
    unsigned char bytes[4] = {};
    int const lenBytes = magic[6] == 1 ? 2 : 4;
    file.read(reinterpret_cast<char*>(bytes), lenBytes);
    for (int i = lenBytes - 1; i >= 0; --i)
    {
        headerLen = (headerLen << 8) | bytes[i];
    }
    std::string header(headerLen, '\0');
    file.read(&header[0], headerLen);
    Array array;
    auto value = [&header, &path](std::string const& key) {
        size_t const at = header.find("'" + key + "':");
        if (at == std::string::npos)
        {
            throw std::runtime_error(path + ": npy header has no " + key);
        }
        return at + key.size() + 3;
    };
    if (header.find("True", value("fortran_order")) == value("fortran_order") + 1)
    {
        throw std::runtime_error(path + ": Fortran order is not supported");
    }
    size_t const d0 = header.find('\'', value("descr"));
    array.descr = header.substr(d0 + 1, header.find('\'', d0 + 1) - d0 - 1);
    size_t const s0 = header.find('(', value("shape"));
    std::string dims = header.substr(s0 + 1, header.find(')', s0) - s0 - 1);
    int64_t count = 1;
    size_t pos = 0;
    while (pos < dims.size())
    {
        size_t const comma = dims.find(',', pos);
        std::string const item = dims.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        if (item.find_first_of("0123456789") != std::string::npos)
        {
            array.shape.push_back(std::stoll(item));
            count *= array.shape.back();
        }
        if (comma == std::string::npos)
        {
            break;
        }
        pos = comma + 1;
    }
    size_t const itemSize = array.descr == "|u1" ? 1 : 4;
    array.data.resize(static_cast<size_t>(count) * itemSize);
    if (!file.read(array.data.data(), static_cast<std::streamsize>(array.data.size())))
    {
        throw std::runtime_error(path + ": truncated data");
    }
    return array;
}

inline void save(std::string const& path, char const* descr, std::vector<int64_t> const& shape, void const* data,
    size_t itemSize)
{
    std::string dims;
    size_t count = 1;
    for (int64_t d : shape)
    {
        dims += std::to_string(d) + ",";
        count *= static_cast<size_t>(d);
    }
    std::string header = "{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': (" + dims + "), }";
    header.append(64 - (10 + header.size() + 1) % 64, ' ');
    header.push_back('\n');
    std::ofstream file(path, std::ios::binary);
    file.write("\x93NUMPY\x01\x00", 8);
    char const len[2] = {static_cast<char>(header.size() & 0xFF), static_cast<char>(header.size() >> 8)};
    file.write(len, 2);
    file.write(header.data(), static_cast<std::streamsize>(header.size()));
    file.write(static_cast<char const*>(data), static_cast<std::streamsize>(count * itemSize));
    if (!file)
    {
        throw std::runtime_error("cannot write " + path);
    }
}

} // namespace npy

#endif // DTP_RUNTIME_NPY_H
