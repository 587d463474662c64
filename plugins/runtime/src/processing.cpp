// SPDX-License-Identifier: Apache-2.0
#include "dtp/processing.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace dtp
{
namespace
{

int32_t roundUp(int32_t value, int32_t multiple)
{
    return (value + multiple - 1) / multiple * multiple;
}

std::string str(Size s)
{
    return std::to_string(s.height) + "x" + std::to_string(s.width);
}

// Bilinear taps along one axis. Kept in double until the fraction, as the Python runtime does,
// so both pick the same source pixels and weights.
struct Taps
{
    std::vector<int32_t> i0;
    std::vector<int32_t> i1;
    std::vector<float> frac;
};

Taps axisTaps(int32_t outSize, int32_t inSize, double scale)
{
    Taps taps;
    taps.i0.resize(outSize);
    taps.i1.resize(outSize);
    taps.frac.resize(outSize);
    for (int32_t i = 0; i < outSize; ++i)
    {
        double const src = std::max((static_cast<double>(i) + 0.5) * scale - 0.5, 0.0);
        int64_t const lo = std::min<int64_t>(static_cast<int64_t>(std::floor(src)), inSize - 1);
        taps.i0[i] = static_cast<int32_t>(lo);
        taps.i1[i] = static_cast<int32_t>(std::min<int64_t>(lo + 1, inSize - 1));
        taps.frac[i] = static_cast<float>(src - static_cast<double>(lo));
    }
    return taps;
}

// Written exactly as the Python runtime writes it; the build disables FMA contraction.
inline float lerp(float a, float b, float frac)
{
    return a * (1.0F - frac) + b * frac;
}

// One output row of every channel: rows first (into rowBuffer), then columns.
void resampleRow(float const* src, int32_t channels, Size in, Taps const& rows, Taps const& cols, int32_t y,
    std::vector<float>& rowBuffer, float* dst, size_t dstChannelStride)
{
    rowBuffer.resize(static_cast<size_t>(in.width));
    size_t const plane = static_cast<size_t>(in.height) * in.width;
    for (int32_t c = 0; c < channels; ++c)
    {
        float const* top = src + c * plane + static_cast<size_t>(rows.i0[y]) * in.width;
        float const* bottom = src + c * plane + static_cast<size_t>(rows.i1[y]) * in.width;
        float const fy = rows.frac[y];
        for (int32_t x = 0; x < in.width; ++x)
        {
            rowBuffer[x] = lerp(top[x], bottom[x], fy);
        }
        float* out = dst + c * dstChannelStride;
        for (size_t x = 0; x < cols.i0.size(); ++x)
        {
            out[x] = lerp(rowBuffer[cols.i0[x]], rowBuffer[cols.i1[x]], cols.frac[x]);
        }
    }
}

} // namespace

Size defaultStride(Size crop, int32_t patch)
{
    auto one = [patch](int32_t c) { return std::max(patch, (2 * c / 3) / patch * patch); };
    return {one(crop.height), one(crop.width)};
}

Plan makePlan(Size image, Mode mode, int32_t patch, Size inputSize, Size crop, Size stride)
{
    if (image.empty())
    {
        throw Error("image of size " + str(image) + " is empty");
    }
    if (patch <= 0)
    {
        throw Error("patch size " + std::to_string(patch) + " must be positive");
    }
    Plan plan;
    plan.image = image;
    plan.resized = image;
    plan.patch = patch;
    if (mode == Mode::kWHOLE)
    {
        if (inputSize.empty())
        {
            plan.canvas = {roundUp(image.height, patch), roundUp(image.width, patch)};
        }
        else
        {
            double const scale = std::min({1.0, static_cast<double>(inputSize.height) / image.height,
                static_cast<double>(inputSize.width) / image.width});
            // nearbyint: ties to even, as Python's round().
            auto fit = [scale](int32_t size, int32_t limit) {
                return std::min(limit, std::max(1, static_cast<int32_t>(std::nearbyint(size * scale))));
            };
            plan.resized = {fit(image.height, inputSize.height), fit(image.width, inputSize.width)};
            plan.canvas = inputSize;
        }
        plan.crop = plan.canvas;
        plan.windows = {{0, 0}};
        return plan;
    }
    if (mode != Mode::kSLIDE)
    {
        throw Error("unknown mode " + std::to_string(static_cast<int32_t>(mode)) + "; use kWHOLE or kSLIDE");
    }
    if (crop.empty())
    {
        throw Error("slide mode needs a crop size (the engine's input size or the trained size)");
    }
    if (stride.empty())
    {
        stride = defaultStride(crop, patch);
    }
    for (auto const& [name, pair] : {std::make_pair("crop", crop), std::make_pair("stride", stride)})
    {
        for (int32_t value : {pair.height, pair.width})
        {
            if (value < patch || value % patch != 0)
            {
                throw Error(std::string(name) + " " + str(pair) + ": " + std::to_string(value)
                    + " is not a positive multiple of the patch size " + std::to_string(patch) + "; use "
                    + std::to_string(std::max(patch, value / patch * patch)));
            }
        }
    }
    if (!inputSize.empty() && crop != inputSize)
    {
        throw Error("crop " + str(crop) + " differs from the engine's fixed input size " + str(inputSize)
            + "; use that crop or an engine built with a dynamic shape");
    }
    if (stride.height > crop.height || stride.width > crop.width)
    {
        throw Error("stride " + str(stride) + " is larger than the crop " + str(crop)
            + ": pixels between windows would get no prediction");
    }
    plan.crop = crop;
    plan.canvas = {std::max(roundUp(image.height, patch), crop.height),
        std::max(roundUp(image.width, patch), crop.width)};
    auto starts = [](int32_t size, int32_t c, int32_t s) {
        int32_t const count = std::max(size - c + s - 1, 0) / s + 1;
        std::vector<int32_t> out;
        for (int32_t i = 0; i < count; ++i)
        {
            out.push_back(std::min(i * s, size - c));
        }
        return out;
    };
    for (int32_t y : starts(plan.canvas.height, crop.height, stride.height))
    {
        for (int32_t x : starts(plan.canvas.width, crop.width, stride.width))
        {
            plan.windows.emplace_back(y, x);
        }
    }
    return plan;
}

void resample(float const* src, int32_t channels, Size in, Size out, double scaleY, double scaleX, float* dst)
{
    Taps const rows = axisTaps(out.height, in.height, scaleY);
    Taps const cols = axisTaps(out.width, in.width, scaleX);
    std::vector<float> rowBuffer;
    size_t const outPlane = static_cast<size_t>(out.height) * out.width;
    for (int32_t y = 0; y < out.height; ++y)
    {
        resampleRow(src, channels, in, rows, cols, y, rowBuffer, dst + static_cast<size_t>(y) * out.width, outPlane);
    }
}

void prepare(uint8_t const* image, ColorOrder order, Plan const& plan, std::array<float, 3> const& mean,
    std::array<float, 3> const& std, std::vector<float>& canvas)
{
    size_t const h = static_cast<size_t>(plan.image.height);
    size_t const w = static_cast<size_t>(plan.image.width);
    std::vector<float> chw(3 * h * w);
    for (size_t c = 0; c < 3; ++c)
    {
        size_t const from = order == ColorOrder::kBGR ? 2 - c : c;
        float* plane = chw.data() + c * h * w;
        for (size_t i = 0; i < h * w; ++i)
        {
            plane[i] = (static_cast<float>(image[3 * i + from]) - mean[c]) / std[c];
        }
    }
    Size const resized = plan.resized;
    float const* placed = chw.data();
    std::vector<float> scaled;
    if (resized != plan.image)
    {
        scaled.resize(3 * static_cast<size_t>(resized.height) * resized.width);
        resample(chw.data(), 3, plan.image, resized, static_cast<double>(plan.image.height) / resized.height,
            static_cast<double>(plan.image.width) / resized.width, scaled.data());
        placed = scaled.data();
    }
    size_t const ch = static_cast<size_t>(plan.canvas.height);
    size_t const cw = static_cast<size_t>(plan.canvas.width);
    canvas.assign(3 * ch * cw, 0.0F);
    for (size_t c = 0; c < 3; ++c)
    {
        for (int32_t y = 0; y < resized.height; ++y)
        {
            float const* from = placed + (c * resized.height + y) * static_cast<size_t>(resized.width);
            std::copy(from, from + resized.width, canvas.data() + (c * ch + y) * cw);
        }
    }
}

void copyWindow(std::vector<float> const& canvas, Plan const& plan, size_t w, float* dst)
{
    auto const [y0, x0] = plan.windows.at(w);
    size_t const ch = static_cast<size_t>(plan.canvas.height);
    size_t const cw = static_cast<size_t>(plan.canvas.width);
    for (size_t c = 0; c < 3; ++c)
    {
        for (int32_t y = 0; y < plan.crop.height; ++y)
        {
            float const* from = canvas.data() + (c * ch + y0 + y) * cw + x0;
            std::copy(from, from + plan.crop.width, dst);
            dst += plan.crop.width;
        }
    }
}

void stitch(std::vector<float const*> const& windowScores, int32_t numClasses, Plan const& plan,
    std::vector<float>& grid)
{
    int32_t const p = plan.patch;
    size_t const gh = static_cast<size_t>(plan.canvas.height / p);
    size_t const gw = static_cast<size_t>(plan.canvas.width / p);
    size_t const wh = static_cast<size_t>(plan.crop.height / p);
    size_t const ww = static_cast<size_t>(plan.crop.width / p);
    if (windowScores.size() != plan.windows.size())
    {
        throw Error("stitch: " + std::to_string(windowScores.size()) + " window scores for "
            + std::to_string(plan.windows.size()) + " windows");
    }
    grid.assign(static_cast<size_t>(numClasses) * gh * gw, 0.0F);
    if (plan.windows.size() == 1 && plan.crop == plan.canvas)
    {
        std::copy(windowScores[0], windowScores[0] + grid.size(), grid.begin());
        return;
    }
    std::vector<float> count(gh * gw, 0.0F);
    for (size_t w = 0; w < plan.windows.size(); ++w)
    {
        size_t const top = static_cast<size_t>(plan.windows[w].first / p);
        size_t const left = static_cast<size_t>(plan.windows[w].second / p);
        for (size_t k = 0; k < static_cast<size_t>(numClasses); ++k)
        {
            for (size_t y = 0; y < wh; ++y)
            {
                float const* from = windowScores[w] + (k * wh + y) * ww;
                float* to = grid.data() + (k * gh + top + y) * gw + left;
                for (size_t x = 0; x < ww; ++x)
                {
                    to[x] += from[x];
                }
            }
        }
        for (size_t y = 0; y < wh; ++y)
        {
            for (size_t x = 0; x < ww; ++x)
            {
                count[(top + y) * gw + left + x] += 1.0F;
            }
        }
    }
    for (size_t k = 0; k < static_cast<size_t>(numClasses); ++k)
    {
        for (size_t i = 0; i < gh * gw; ++i)
        {
            grid[k * gh * gw + i] /= count[i];
        }
    }
}

void labelsFromGrid(float const* grid, int32_t numClasses, Plan const& plan, int32_t* labels)
{
    int32_t const p = plan.patch;
    Size const in{plan.canvas.height / p, plan.canvas.width / p};
    Size const out = plan.image;
    // Grid step per original pixel: the image covers `resized` canvas pixels.
    double const scaleY = static_cast<double>(plan.resized.height) / (static_cast<double>(out.height) * p);
    double const scaleX = static_cast<double>(plan.resized.width) / (static_cast<double>(out.width) * p);
    Taps const rows = axisTaps(out.height, in.height, scaleY);
    Taps const cols = axisTaps(out.width, in.width, scaleX);
    std::vector<float> rowBuffer;
    std::vector<float> values(static_cast<size_t>(numClasses) * out.width);
    for (int32_t y = 0; y < out.height; ++y)
    {
        resampleRow(grid, numClasses, in, rows, cols, y, rowBuffer, values.data(), static_cast<size_t>(out.width));
        int32_t* row = labels + static_cast<size_t>(y) * out.width;
        for (int32_t x = 0; x < out.width; ++x)
        {
            int32_t best = 0;
            float bestValue = values[x];
            for (int32_t k = 1; k < numClasses; ++k)
            {
                float const v = values[static_cast<size_t>(k) * out.width + x];
                if (v > bestValue) // the first maximum wins, as numpy's argmax
                {
                    best = k;
                    bestValue = v;
                }
            }
            row[x] = best;
        }
    }
}

} // namespace dtp
