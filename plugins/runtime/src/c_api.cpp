// SPDX-License-Identifier: Apache-2.0
#include "dtp/segmenter_c.h"

#include "dtp/segmenter.h"

#include <algorithm>
#include <exception>
#include <new>
#include <string>

struct dtp_segmenter
{
    std::unique_ptr<dtp::Segmenter> segmenter;
};

namespace
{

thread_local std::string gLastError;

int fail(std::string message)
{
    gLastError = std::move(message);
    return -1;
}

} // namespace

extern "C" {

void dtp_options_init(dtp_options* options)
{
    if (options == nullptr)
    {
        return;
    }
    dtp::Options const defaults;
    *options = dtp_options{};
    std::copy(defaults.mean.begin(), defaults.mean.end(), options->mean);
    std::copy(defaults.std.begin(), defaults.std.end(), options->std);
    options->patch_size = defaults.patchSize;
    options->mode = DTP_MODE_WHOLE;
    options->plugin_library = nullptr;
    options->device = defaults.device;
    options->max_batch = defaults.maxBatch;
}

dtp_segmenter* dtp_segmenter_create(char const* engine_path, dtp_options const* options)
{
    gLastError.clear();
    if (engine_path == nullptr)
    {
        fail("dtp_segmenter_create: engine_path is NULL");
        return nullptr;
    }
    dtp_options fallback;
    dtp_options_init(&fallback);
    dtp_options const& in = options != nullptr ? *options : fallback;
    if (in.mode != DTP_MODE_WHOLE && in.mode != DTP_MODE_SLIDE)
    {
        fail("dtp_segmenter_create: mode " + std::to_string(in.mode) + " is neither DTP_MODE_WHOLE nor DTP_MODE_SLIDE");
        return nullptr;
    }
    dtp::Options opts;
    std::copy(in.mean, in.mean + 3, opts.mean.begin());
    std::copy(in.std, in.std + 3, opts.std.begin());
    opts.patchSize = in.patch_size;
    opts.mode = static_cast<dtp::Mode>(in.mode);
    opts.crop = {in.crop[0], in.crop[1]};
    opts.stride = {in.stride[0], in.stride[1]};
    opts.trainedSize = {in.trained_size[0], in.trained_size[1]};
    opts.color = in.bgr ? dtp::ColorOrder::kBGR : dtp::ColorOrder::kRGB;
    opts.pluginLibrary = in.plugin_library != nullptr ? in.plugin_library : "";
    opts.device = in.device;
    opts.maxBatch = in.max_batch;
    try
    {
        auto handle = std::make_unique<dtp_segmenter>();
        handle->segmenter = std::make_unique<dtp::Segmenter>(std::string(engine_path), opts);
        return handle.release();
    }
    catch (std::exception const& err)
    {
        fail(err.what());
    }
    catch (...)
    {
        fail("dtp_segmenter_create: unknown error");
    }
    return nullptr;
}

int dtp_segmenter_predict(dtp_segmenter* segmenter, uint8_t const* image, int32_t height, int32_t width,
    int32_t* labels, float* keep_ratio, size_t keep_ratio_len)
{
    gLastError.clear();
    if (segmenter == nullptr || image == nullptr || labels == nullptr)
    {
        return fail("dtp_segmenter_predict: segmenter, image and labels must not be NULL");
    }
    try
    {
        dtp::Result const result = segmenter->segmenter->predict(image, height, width);
        std::copy(result.labels.begin(), result.labels.end(), labels);
        if (keep_ratio != nullptr)
        {
            size_t const n = std::min(keep_ratio_len, result.keepRatio.size());
            std::copy(result.keepRatio.begin(), result.keepRatio.begin() + n, keep_ratio);
        }
        return 0;
    }
    catch (std::exception const& err)
    {
        return fail(err.what());
    }
    catch (...)
    {
        return fail("dtp_segmenter_predict: unknown error");
    }
}

int32_t dtp_segmenter_num_classes(dtp_segmenter const* segmenter)
{
    return segmenter != nullptr ? segmenter->segmenter->numClasses() : 0;
}

void dtp_segmenter_destroy(dtp_segmenter* segmenter)
{
    delete segmenter;
}

char const* dtp_last_error(void)
{
    return gLastError.c_str();
}

} // extern "C"
