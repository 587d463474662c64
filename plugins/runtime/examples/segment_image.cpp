// SPDX-License-Identifier: Apache-2.0
// Segment a PPM image with an exported model (.onnx: OpenVINO, .engine: TensorRT) and write the
// labels and a colour overlay as PNGs.
//
//   dtp_segment_image model.onnx street.ppm labels.png [overlay.png] [--slide] [--plugins LIB.so]
#include "dtp/segmenter.h"
#include "image_io.h"

#include <cstring>
#include <iostream>

int main(int argc, char** argv)
{
    if (argc < 4)
    {
        std::cerr << "usage: " << argv[0]
                  << " MODEL.onnx|MODEL.engine IMAGE.ppm LABELS.png [OVERLAY.png] [--slide] [--plugins LIB.so]\n";
        return 2;
    }
    dtp::Options options; // mean/std/patch: from the model's metadata (or the engine's sidecar)
    std::string overlayPath;
    for (int i = 4; i < argc; ++i)
    {
        if (std::strcmp(argv[i], "--slide") == 0)
        {
            options.mode = dtp::Mode::kSLIDE;
        }
        else if (std::strcmp(argv[i], "--plugins") == 0 && i + 1 < argc)
        {
            options.pluginLibrary = argv[++i];
        }
        else
        {
            overlayPath = argv[i];
        }
    }
    try
    {
        dtp::io::Image const image = dtp::io::readPpm(argv[2]);
        dtp::Segmenter segmenter(argv[1], options);
        dtp::Result const result = segmenter.predict(image.pixels.data(), image.height, image.width);

        std::vector<uint8_t> gray(result.labels.size());
        std::vector<uint8_t> overlay(image.pixels);
        for (size_t i = 0; i < result.labels.size(); ++i)
        {
            gray[i] = static_cast<uint8_t>(result.labels[i]);
            auto const colour = dtp::io::classColour(result.labels[i]);
            for (size_t c = 0; c < 3; ++c)
            {
                overlay[3 * i + c] = static_cast<uint8_t>((overlay[3 * i + c] + colour[c]) / 2);
            }
        }
        dtp::io::writePng(argv[3], gray.data(), image.height, image.width, 1);
        if (!overlayPath.empty())
        {
            dtp::io::writePng(overlayPath, overlay.data(), image.height, image.width, 3);
        }
        std::cout << argv[2] << ": " << result.windows << " window(s), " << result.totalMs << " ms, keep ratio";
        for (float r : result.keepRatio)
        {
            std::cout << ' ' << r;
        }
        std::cout << '\n';
    }
    catch (std::exception const& err)
    {
        std::cerr << "error: " << err.what() << '\n';
        return 1;
    }
    return 0;
}
