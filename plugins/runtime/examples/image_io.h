// SPDX-License-Identifier: Apache-2.0
// Image files without dependencies: binary PPM (P6) in, PNG out (8-bit gray or RGB, stored
// deflate blocks: larger than a compressed PNG, but any viewer reads it).
#ifndef DTP_RUNTIME_IMAGE_IO_H
#define DTP_RUNTIME_IMAGE_IO_H

#include <algorithm>
#include <array>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace dtp
{
namespace io
{

struct Image
{
    int32_t height{0};
    int32_t width{0};
    std::vector<uint8_t> pixels; // height x width x 3, RGB
};

//! Read a binary PPM (P6, maxval 255). Comments (#) in the header are skipped.
inline Image readPpm(std::string const& path)
{
    std::ifstream file(path, std::ios::binary);
    if (!file)
    {
        throw std::runtime_error("cannot open " + path);
    }
    auto token = [&file, &path]() {
        std::string word;
        char c = 0;
        while (file.get(c))
        {
            if (c == '#')
            {
                std::string comment;
                std::getline(file, comment);
            }
            else if (std::isspace(static_cast<unsigned char>(c)) == 0)
            {
                word.push_back(c);
                break;
            }
        }
        while (file.get(c) && std::isspace(static_cast<unsigned char>(c)) == 0)
        {
            word.push_back(c);
        }
        if (word.empty())
        {
            throw std::runtime_error(path + ": truncated PPM header");
        }
        return word;
    };
    if (token() != "P6")
    {
        throw std::runtime_error(path + " is not a binary PPM (P6); convert it, e.g. with Pillow: "
                                        "Image.open(f).convert('RGB').save('x.ppm')");
    }
    Image image;
    image.width = std::stoi(token());
    image.height = std::stoi(token());
    if (std::stoi(token()) != 255 || image.width <= 0 || image.height <= 0)
    {
        throw std::runtime_error(path + ": only 8-bit PPMs of a positive size are supported");
    }
    image.pixels.resize(static_cast<size_t>(image.height) * image.width * 3);
    file.read(reinterpret_cast<char*>(image.pixels.data()), static_cast<std::streamsize>(image.pixels.size()));
    if (file.gcount() != static_cast<std::streamsize>(image.pixels.size()))
    {
        throw std::runtime_error(path + ": truncated pixel data");
    }
    return image;
}

namespace detail
{

inline uint32_t crc32(uint8_t const* data, size_t size, uint32_t crc = 0)
{
    crc = ~crc;
    for (size_t i = 0; i < size; ++i)
    {
        crc ^= data[i];
        for (int bit = 0; bit < 8; ++bit)
        {
            crc = (crc >> 1) ^ (0xEDB88320U & (0U - (crc & 1U)));
        }
    }
    return ~crc;
}

inline void put32(std::vector<uint8_t>& out, uint32_t value)
{
    for (int shift = 24; shift >= 0; shift -= 8)
    {
        out.push_back(static_cast<uint8_t>(value >> shift));
    }
}

inline void chunk(std::ofstream& file, char const* type, std::vector<uint8_t> const& data)
{
    std::vector<uint8_t> body(type, type + 4);
    body.insert(body.end(), data.begin(), data.end());
    std::vector<uint8_t> head;
    put32(head, static_cast<uint32_t>(data.size()));
    std::vector<uint8_t> tail;
    put32(tail, crc32(body.data(), body.size()));
    file.write(reinterpret_cast<char const*>(head.data()), 4);
    file.write(reinterpret_cast<char const*>(body.data()), static_cast<std::streamsize>(body.size()));
    file.write(reinterpret_cast<char const*>(tail.data()), 4);
}

} // namespace detail

//! Write height x width x channels (1: gray, 3: RGB) 8-bit pixels as a PNG.
inline void writePng(std::string const& path, uint8_t const* pixels, int32_t height, int32_t width, int32_t channels)
{
    if (channels != 1 && channels != 3)
    {
        throw std::runtime_error("writePng: channels must be 1 or 3");
    }
    std::ofstream file(path, std::ios::binary);
    if (!file)
    {
        throw std::runtime_error("cannot write " + path);
    }
    static constexpr std::array<uint8_t, 8> kSIGNATURE{0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    file.write(reinterpret_cast<char const*>(kSIGNATURE.data()), kSIGNATURE.size());
    std::vector<uint8_t> header;
    detail::put32(header, static_cast<uint32_t>(width));
    detail::put32(header, static_cast<uint32_t>(height));
    header.insert(header.end(), {8, static_cast<uint8_t>(channels == 1 ? 0 : 2), 0, 0, 0});
    detail::chunk(file, "IHDR", header);

    // Raw scanlines, each led by filter type 0, in a zlib stream of stored deflate blocks.
    size_t const rowBytes = static_cast<size_t>(width) * channels;
    std::vector<uint8_t> raw;
    raw.reserve((rowBytes + 1) * height);
    for (int32_t y = 0; y < height; ++y)
    {
        raw.push_back(0);
        raw.insert(raw.end(), pixels + y * rowBytes, pixels + (y + 1) * rowBytes);
    }
    std::vector<uint8_t> zlib{0x78, 0x01};
    size_t offset = 0;
    do
    {
        size_t const n = std::min<size_t>(65535, raw.size() - offset);
        bool const last = offset + n == raw.size();
        zlib.push_back(last ? 1 : 0);
        zlib.push_back(static_cast<uint8_t>(n & 0xFF));
        zlib.push_back(static_cast<uint8_t>(n >> 8));
        zlib.push_back(static_cast<uint8_t>(~n & 0xFF));
        zlib.push_back(static_cast<uint8_t>((~n >> 8) & 0xFF));
        zlib.insert(zlib.end(), raw.begin() + static_cast<std::ptrdiff_t>(offset),
            raw.begin() + static_cast<std::ptrdiff_t>(offset + n));
        offset += n;
    } while (offset < raw.size());
    uint32_t a = 1;
    uint32_t b = 0;
    for (uint8_t byte : raw)
    {
        a = (a + byte) % 65521U;
        b = (b + a) % 65521U;
    }
    detail::put32(zlib, (b << 16) | a);
    detail::chunk(file, "IDAT", zlib);
    detail::chunk(file, "IEND", {});
    if (!file)
    {
        throw std::runtime_error("error writing " + path);
    }
}

//! A fixed colour per class index, for overlays.
inline std::array<uint8_t, 3> classColour(int32_t label)
{
    uint32_t const h = static_cast<uint32_t>(label) * 2654435761U;
    return {static_cast<uint8_t>(h >> 24), static_cast<uint8_t>(h >> 16), static_cast<uint8_t>(h >> 8)};
}

} // namespace io
} // namespace dtp

#endif // DTP_RUNTIME_IMAGE_IO_H
