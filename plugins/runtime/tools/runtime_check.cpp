// SPDX-License-Identifier: Apache-2.0
// Test driver: runs dtp::Segmenter with a backend that replays window scores computed by the
// Python runtime, and writes what the C++ side produced (.npy) for tests/test_cpp_runtime.py.
//
//   dtp_runtime_check predict --image I.npy --scores S.npy --keep K.npy --labels OUT.npy [--inputs OUT.npy]
//       [--keep-ratio OUT.npy] [--mean a,b,c] [--std a,b,c] [--patch 16] [--mode whole|slide]
//       [--input H,W] [--crop H,W] [--stride H,W] [--trained H,W] [--fixed-batch N] [--bgr]
//   dtp_runtime_check png --pixels P.npy --out OUT.png      (H x W uint8, or H x W x 3)
//   dtp_runtime_check c-api                                 (C API error paths)
#include "../examples/image_io.h"
#include "dtp/segmenter.h"
#include "dtp/segmenter_c.h"
#include "npy.h"

#include <cstring>
#include <iostream>
#include <map>
#include <sstream>

namespace
{

class ReplayBackend final : public dtp::Backend
{
public:
    ReplayBackend(npy::Array scores, npy::Array keep, dtp::Size inputSize, int32_t fixedBatch)
        : mScores(std::move(scores))
        , mKeep(std::move(keep))
        , mInputSize(inputSize)
        , mFixedBatch(fixedBatch)
    {
    }

    dtp::Size inputSize() const override { return mInputSize; }
    int32_t fixedBatch() const override { return mFixedBatch; }
    int32_t maxBatch() const override { return mFixedBatch > 0 ? mFixedBatch : 3; }

    int32_t infer(float const* images, int32_t batch, dtp::Size size, int32_t patch, std::vector<float>& scores,
        std::vector<int32_t>& keepCounts, int32_t& numStages) override
    {
        int64_t const windows = mScores.shape.at(0);
        int64_t const k = mScores.shape.at(1);
        size_t const perWindow = static_cast<size_t>(k * mScores.shape.at(2) * mScores.shape.at(3));
        if (mScores.shape.at(2) != size.height / patch || mScores.shape.at(3) != size.width / patch)
        {
            throw dtp::Error("replay: scores grid does not match the window size");
        }
        numStages = static_cast<int32_t>(mKeep.shape.at(1));
        scores.assign(static_cast<size_t>(batch) * perWindow, 0.0F);
        keepCounts.assign(static_cast<size_t>(batch) * numStages, 0);
        size_t const inputSize = 3 * static_cast<size_t>(size.height) * size.width;
        for (int32_t row = 0; row < batch && mNext < windows; ++row, ++mNext)
        {
            float const* from = mScores.as<float>("<f4") + mNext * perWindow;
            std::copy(from, from + perWindow, scores.begin() + row * perWindow);
            int32_t const* keep = mKeep.as<int32_t>("<i4") + mNext * numStages;
            std::copy(keep, keep + numStages, keepCounts.begin() + row * numStages);
            inputs.insert(inputs.end(), images + row * inputSize, images + (row + 1) * inputSize);
        }
        return static_cast<int32_t>(k);
    }

    std::vector<float> inputs; // what the Segmenter fed, window after window

private:
    npy::Array mScores;
    npy::Array mKeep;
    dtp::Size mInputSize;
    int32_t mFixedBatch;
    int64_t mNext{0};
};

std::vector<double> numbers(std::string const& text)
{
    std::vector<double> out;
    std::stringstream stream(text);
    std::string item;
    while (std::getline(stream, item, ','))
    {
        out.push_back(std::stod(item));
    }
    return out;
}

dtp::Size size(std::map<std::string, std::string> const& args, std::string const& key)
{
    auto it = args.find(key);
    if (it == args.end())
    {
        return {};
    }
    auto v = numbers(it->second);
    return {static_cast<int32_t>(v.at(0)), static_cast<int32_t>(v.at(1))};
}

int predict(std::map<std::string, std::string> const& args)
{
    npy::Array const image = npy::load(args.at("--image"));
    dtp::Options options;
    if (args.count("--mean"))
    {
        auto v = numbers(args.at("--mean"));
        options.mean = {static_cast<float>(v.at(0)), static_cast<float>(v.at(1)), static_cast<float>(v.at(2))};
    }
    if (args.count("--std"))
    {
        auto v = numbers(args.at("--std"));
        options.std = {static_cast<float>(v.at(0)), static_cast<float>(v.at(1)), static_cast<float>(v.at(2))};
    }
    if (args.count("--patch"))
    {
        options.patchSize = std::stoi(args.at("--patch"));
    }
    options.mode = args.count("--mode") && args.at("--mode") == "slide" ? dtp::Mode::kSLIDE : dtp::Mode::kWHOLE;
    options.crop = size(args, "--crop");
    options.stride = size(args, "--stride");
    options.trainedSize = size(args, "--trained");
    options.color = args.count("--bgr") ? dtp::ColorOrder::kBGR : dtp::ColorOrder::kRGB;
    int32_t const fixedBatch = args.count("--fixed-batch") ? std::stoi(args.at("--fixed-batch")) : 0;
    auto backend = std::make_unique<ReplayBackend>(
        npy::load(args.at("--scores")), npy::load(args.at("--keep")), size(args, "--input"), fixedBatch);
    ReplayBackend* replay = backend.get();
    dtp::Segmenter segmenter(std::move(backend), options);
    int32_t const h = static_cast<int32_t>(image.shape.at(0));
    int32_t const w = static_cast<int32_t>(image.shape.at(1));
    dtp::Result const result = segmenter.predict(image.as<uint8_t>("|u1"), h, w);
    npy::save(args.at("--labels"), "<i4", {h, w}, result.labels.data(), 4);
    if (args.count("--inputs"))
    {
        int64_t const windows = result.windows;
        int64_t const per = static_cast<int64_t>(replay->inputs.size()) / std::max<int64_t>(windows, 1);
        npy::save(args.at("--inputs"), "<f4", {windows, per}, replay->inputs.data(), 4);
    }
    if (args.count("--keep-ratio"))
    {
        npy::save(args.at("--keep-ratio"), "<f4", {static_cast<int64_t>(result.keepRatio.size())},
            result.keepRatio.data(), 4);
    }
    return 0;
}

int png(std::map<std::string, std::string> const& args)
{
    npy::Array const pixels = npy::load(args.at("--pixels"));
    int32_t const channels = pixels.shape.size() == 3 ? static_cast<int32_t>(pixels.shape[2]) : 1;
    dtp::io::writePng(args.at("--out"), pixels.as<uint8_t>("|u1"), static_cast<int32_t>(pixels.shape.at(0)),
        static_cast<int32_t>(pixels.shape.at(1)), channels);
    return 0;
}

int cApi()
{
    dtp_options options;
    dtp_options_init(&options);
    if (options.patch_size != 16 || options.mean[0] != 123.675F)
    {
        std::cerr << "dtp_options_init: wrong defaults\n";
        return 1;
    }
    dtp_segmenter* segmenter = dtp_segmenter_create("missing.engine", &options);
    if (segmenter != nullptr || std::strlen(dtp_last_error()) == 0)
    {
        std::cerr << "dtp_segmenter_create should fail on a missing engine with a message\n";
        return 1;
    }
    std::cout << "create: " << dtp_last_error() << '\n';
    options.mode = 7;
    if (dtp_segmenter_create("model.engine", &options) != nullptr || std::strstr(dtp_last_error(), "mode 7") == nullptr)
    {
        std::cerr << "a bad mode should be refused by name\n";
        return 1;
    }
    int32_t labels[4];
    uint8_t image[12] = {};
    if (dtp_segmenter_predict(nullptr, image, 2, 2, labels, nullptr, 0) == 0 || std::strlen(dtp_last_error()) == 0)
    {
        std::cerr << "dtp_segmenter_predict should refuse a NULL segmenter\n";
        return 1;
    }
    dtp_segmenter_destroy(nullptr);
    std::cout << "predict: " << dtp_last_error() << '\n' << "tensorrt: " << (dtp::hasTensorRT() ? "yes" : "no") << '\n';
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 2)
    {
        std::cerr << "usage: " << argv[0] << " predict|png|c-api [--key value ...]\n";
        return 2;
    }
    std::map<std::string, std::string> args;
    for (int i = 2; i < argc; ++i)
    {
        std::string const key = argv[i];
        bool const flag = i + 1 >= argc || std::strncmp(argv[i + 1], "--", 2) == 0;
        args[key] = flag ? "1" : argv[++i];
    }
    try
    {
        std::string const command = argv[1];
        if (command == "predict")
        {
            return predict(args);
        }
        if (command == "png")
        {
            return png(args);
        }
        if (command == "c-api")
        {
            return cApi();
        }
        std::cerr << "unknown command " << command << '\n';
        return 2;
    }
    catch (std::exception const& err)
    {
        std::cerr << "error: " << err.what() << '\n';
        return 1;
    }
}
