// SPDX-License-Identifier: Apache-2.0
// Pre- and post-processing of the dtp runtime, shared by every backend (portable C++17).
// The same steps, with the same arithmetic, as dtp_deploy/runtime/processing.py: tests compare
// the labels of both on the same scores.
#ifndef DTP_RUNTIME_PROCESSING_H
#define DTP_RUNTIME_PROCESSING_H

#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace dtp
{

//! Every failure of the runtime: the message names the value and the fix.
class Error : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

struct Size
{
    int32_t height{0};
    int32_t width{0};
    bool empty() const { return height <= 0 || width <= 0; }
    bool operator==(Size const& other) const { return height == other.height && width == other.width; }
    bool operator!=(Size const& other) const { return !(*this == other); }
};

enum class Mode : int32_t
{
    kWHOLE = 0, //!< one network input: the image padded (downscaled first when a fixed input is smaller)
    kSLIDE = 1, //!< crop windows every stride pixels, scores averaged where they overlap
};

enum class ColorOrder : int32_t
{
    kRGB = 0,
    kBGR = 1,
};

//! How one image becomes network inputs and how the scores map back to it.
struct Plan
{
    Size image;   //!< original size
    Size resized; //!< the image's size on the canvas
    Size canvas;  //!< padded size, a multiple of the patch
    Size crop;    //!< network input size
    std::vector<std::pair<int32_t, int32_t>> windows; //!< (y, x) top-left corners on the canvas
    int32_t patch{16};

    int64_t tokensPerWindow() const
    {
        return static_cast<int64_t>(crop.height / patch) * (crop.width / patch);
    }
};

//! Two thirds of the crop rounded down to the patch (DToP: 512 -> 341; here 336).
Size defaultStride(Size crop, int32_t patch);

//! The plan of an image. inputSize is the network's fixed input size, or empty when dynamic;
//! crop and stride apply to kSLIDE (empty stride: defaultStride).
Plan makePlan(Size image, Mode mode, int32_t patch, Size inputSize, Size crop, Size stride);

//! HxWx3 uint8 -> normalised, resized and zero-padded 3 x canvas float32 (RGB planes).
void prepare(uint8_t const* image, ColorOrder order, Plan const& plan, std::array<float, 3> const& mean,
    std::array<float, 3> const& std, std::vector<float>& canvas);

//! Copy window w of the canvas into dst (3 x crop).
void copyWindow(std::vector<float> const& canvas, Plan const& plan, size_t w, float* dst);

//! Bilinear resampling of C x inH x inW to C x outH x outW, F.interpolate(align_corners=False)
//! taps with the given source step per output pixel; rows first, then columns.
void resample(float const* src, int32_t channels, Size in, Size out, double scaleY, double scaleX, float* dst);

//! Average window scores (each K x crop/patch) on the canvas token grid -> K x canvas/patch.
void stitch(std::vector<float const*> const& windowScores, int32_t numClasses, Plan const& plan,
    std::vector<float>& grid);

//! Argmax over classes of the grid scores resampled to the original size -> H x W labels.
void labelsFromGrid(float const* grid, int32_t numClasses, Plan const& plan, int32_t* labels);

} // namespace dtp

#endif // DTP_RUNTIME_PROCESSING_H
