// SPDX-License-Identifier: Apache-2.0
// Test driver: runs dtp::Segmenter on a real model file (OpenVINO for .onnx) with the Options a
// C++ user would write, and saves what it produced (.npy) for tests/test_cpp_openvino.py.
//
//   dtp_model_check MODEL IMAGE.npy LABELS.npy [--keep-ratio OUT.npy] [--slide] [--crop H,W]
//       [--stride H,W] [--bgr] [--repeat N] [--threads N]
//
//   dtp_model_check sidecar MODEL.engine      (the Options an engine's sidecar gives, as text)
//
// --threads N: N threads share one Segmenter, each predicting the image --repeat times; every
// result must equal the first one. Prints "classes K", "windows W", "names a,b,..." and
// "total_ms" lines (the median per predict over the repeats of thread 0).
#include "dtp/metadata.h"
#include "dtp/segmenter.h"
#include "npy.h"

#include <algorithm>
#include <cstring>
#include <iostream>
#include <map>
#include <thread>

namespace
{

dtp::Size pair(std::map<std::string, std::string> const& args, std::string const& key)
{
    auto it = args.find(key);
    if (it == args.end())
    {
        return {};
    }
    size_t const comma = it->second.find(',');
    return {std::stoi(it->second.substr(0, comma)), std::stoi(it->second.substr(comma + 1))};
}

int sidecar(std::string const& enginePath)
{
    dtp::Options options;
    dtp::MetadataProps const props = dtp::readEngineSidecar(enginePath);
    dtp::applyMetadata(props, enginePath, options);
    std::cout.precision(9);
    std::cout << "keys " << props.size() << "\nmean " << options.mean[0] << ',' << options.mean[1] << ','
              << options.mean[2] << "\nstd " << options.std[0] << ',' << options.std[1] << ',' << options.std[2]
              << "\npatch " << options.patchSize << "\ntrained " << options.trainedSize.height << ','
              << options.trainedSize.width << "\nnames ";
    for (size_t k = 0; k < options.classNames.size(); ++k)
    {
        std::cout << (k ? "," : "") << options.classNames[k];
    }
    std::cout << '\n';
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc == 3 && std::strcmp(argv[1], "sidecar") == 0)
    {
        try
        {
            return sidecar(argv[2]);
        }
        catch (std::exception const& err)
        {
            std::cerr << "error: " << err.what() << '\n';
            return 1;
        }
    }
    if (argc < 4)
    {
        std::cerr << "usage: " << argv[0] << " MODEL IMAGE.npy LABELS.npy [--keep-ratio OUT.npy] [--slide] ...\n";
        return 2;
    }
    std::map<std::string, std::string> args;
    for (int i = 4; i < argc; ++i)
    {
        std::string const key = argv[i]; // before the ++i below
        bool const flag = i + 1 >= argc || std::strncmp(argv[i + 1], "--", 2) == 0;
        args[key] = flag ? "1" : argv[++i];
    }
    try
    {
        npy::Array const image = npy::load(argv[2]);
        int32_t const h = static_cast<int32_t>(image.shape.at(0));
        int32_t const w = static_cast<int32_t>(image.shape.at(1));
        dtp::Options options; // everything else from the model's metadata
        options.mode = args.count("--slide") ? dtp::Mode::kSLIDE : dtp::Mode::kWHOLE;
        options.crop = pair(args, "--crop");
        options.stride = pair(args, "--stride");
        options.color = args.count("--bgr") ? dtp::ColorOrder::kBGR : dtp::ColorOrder::kRGB;
        dtp::Segmenter segmenter(argv[1], options);
        int const repeat = args.count("--repeat") ? std::stoi(args.at("--repeat")) : 1;
        int const threads = args.count("--threads") ? std::stoi(args.at("--threads")) : 1;

        dtp::Result const first = segmenter.predict(image.as<uint8_t>("|u1"), h, w);
        std::vector<double> times;
        std::vector<int> mismatches(static_cast<size_t>(threads), 0);
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t)
        {
            pool.emplace_back([&, t] {
                for (int r = 0; r < repeat; ++r)
                {
                    dtp::Result const result = segmenter.predict(image.as<uint8_t>("|u1"), h, w);
                    if (result.labels != first.labels || result.keepRatio != first.keepRatio)
                    {
                        ++mismatches[static_cast<size_t>(t)];
                    }
                    if (t == 0)
                    {
                        times.push_back(result.totalMs);
                    }
                }
            });
        }
        for (auto& thread : pool)
        {
            thread.join();
        }
        for (int t = 0; t < threads; ++t)
        {
            if (mismatches[static_cast<size_t>(t)] != 0)
            {
                std::cerr << "thread " << t << ": " << mismatches[static_cast<size_t>(t)]
                          << " result(s) differ from the first prediction\n";
                return 1;
            }
        }
        npy::save(argv[3], "<i4", {h, w}, first.labels.data(), 4);
        if (args.count("--keep-ratio"))
        {
            npy::save(args.at("--keep-ratio"), "<f4", {static_cast<int64_t>(first.keepRatio.size())},
                first.keepRatio.data(), 4);
        }
        std::sort(times.begin(), times.end());
        std::cout << "classes " << segmenter.numClasses() << "\nwindows " << first.windows << "\nnames ";
        for (size_t k = 0; k < segmenter.options().classNames.size(); ++k)
        {
            std::cout << (k ? "," : "") << segmenter.options().classNames[k];
        }
        std::cout << "\npatch " << segmenter.options().patchSize << "\ntotal_ms "
                  << (times.empty() ? first.totalMs : times[times.size() / 2]) << '\n';
    }
    catch (std::exception const& err)
    {
        std::cerr << "error: " << err.what() << '\n';
        return 1;
    }
    return 0;
}
