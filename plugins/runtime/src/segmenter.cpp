// SPDX-License-Identifier: Apache-2.0
#include "dtp/segmenter.h"

#include "backend_factory.h"
#include "dtp/openvino_backend.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>

namespace dtp
{
namespace
{

double msSince(std::chrono::steady_clock::time_point start)
{
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

} // namespace

// mBackend is declared before mOptions: the backend is made (and the options completed from the
// model's metadata) before options is moved.
Segmenter::Segmenter(std::string const& modelPath, Options options)
    : mBackend(createBackend(modelPath, options))
    , mOptions(withModelMetadata(mBackend.get(), modelPath, std::move(options)))
{
    checkOptions();
}

namespace
{

std::mutex gFactoriesMutex;

std::map<std::string, BackendFactory>& factories()
{
    static std::map<std::string, BackendFactory> registered{{"tensorrt", createTensorRTBackend},
        {"openvino", [](std::string const& path, Options const& options) { return createOpenVINOBackend(path, options); }}};
    return registered;
}

} // namespace

void registerBackend(std::string const& name, BackendFactory factory)
{
    std::lock_guard<std::mutex> lock(gFactoriesMutex);
    if (factory)
    {
        factories()[name] = std::move(factory);
    }
    else
    {
        factories().erase(name);
    }
}

std::unique_ptr<Backend> createBackend(std::string const& modelPath, Options const& options)
{
    BackendFactory factory;
    {
        std::lock_guard<std::mutex> lock(gFactoriesMutex);
        std::string const name = options.backend == "auto" ? backendForSuffix(modelPath) : options.backend;
        auto const it = factories().find(name);
        if (it == factories().end())
        {
            std::string known;
            for (auto const& entry : factories())
            {
                known += (known.empty() ? "" : ", ") + entry.first;
            }
            throw Error("cannot open " + modelPath + ": no backend '" + name + "' (registered: " + known + ")");
        }
        factory = it->second;
    }
    return factory(modelPath, options);
}

Segmenter::Segmenter(std::unique_ptr<Backend> backend, Options options)
    : mBackend(std::move(backend))
    , mOptions(std::move(options))
{
    checkOptions();
}

void Segmenter::checkOptions() const
{
    if (!mBackend)
    {
        throw Error("Segmenter: no backend");
    }
    if (mOptions.patchSize <= 0)
    {
        throw Error("Options::patchSize " + std::to_string(mOptions.patchSize) + " must be positive (16 for ViT/16)");
    }
    for (float s : mOptions.std)
    {
        if (!(s > 0.0F))
        {
            throw Error("Options::std must be positive (the model's dtp.std, e.g. 58.395, 57.12, 57.375)");
        }
    }
    if (mOptions.maxBatch < 1)
    {
        throw Error("Options::maxBatch " + std::to_string(mOptions.maxBatch) + " must be at least 1");
    }
}

Segmenter::~Segmenter() = default;

int32_t Segmenter::numClasses() const
{
    std::lock_guard<std::mutex> lock(mMutex);
    return mNumClasses;
}

Result Segmenter::predict(uint8_t const* image, int32_t height, int32_t width)
{
    auto const start = std::chrono::steady_clock::now();
    if (image == nullptr)
    {
        throw Error("predict: image is null");
    }
    Size const inputSize = mBackend->inputSize();
    Size crop = mOptions.crop;
    if (crop.empty())
    {
        crop = inputSize.empty() ? mOptions.trainedSize : inputSize;
    }
    Plan const plan = makePlan({height, width}, mOptions.mode, mOptions.patchSize, inputSize, crop, mOptions.stride);
    std::vector<float> canvas;
    prepare(image, mOptions.color, plan, mOptions.mean, mOptions.std, canvas);

    size_t const windowCount = plan.windows.size();
    size_t const windowSize = 3 * static_cast<size_t>(plan.crop.height) * plan.crop.width;
    int32_t const fixed = mBackend->fixedBatch();
    int32_t const batch = fixed > 0 ? fixed : std::max(1, std::min(mOptions.maxBatch, mBackend->maxBatch()));
    std::vector<float> allScores;
    std::vector<int32_t> allKeep;
    int32_t numClasses = 0;
    int32_t numStages = 0;
    size_t const gridPerWindow = static_cast<size_t>(plan.tokensPerWindow());
    double inferenceMs = 0.0;
    std::vector<float> inputs;
    std::vector<float> scores;
    std::vector<int32_t> keep;
    for (size_t first = 0; first < windowCount; first += static_cast<size_t>(batch))
    {
        size_t const count = std::min(static_cast<size_t>(batch), windowCount - first);
        size_t const rows = fixed > 0 ? static_cast<size_t>(fixed) : count;
        inputs.assign(rows * windowSize, 0.0F); // a fixed batch is filled up with zeros
        for (size_t i = 0; i < count; ++i)
        {
            copyWindow(canvas, plan, first + i, inputs.data() + i * windowSize);
        }
        auto const before = std::chrono::steady_clock::now();
        int32_t stages = 0;
        int32_t classes = 0;
        {
            std::lock_guard<std::mutex> lock(mMutex);
            classes = mBackend->infer(inputs.data(), static_cast<int32_t>(rows), plan.crop, plan.patch, scores, keep, stages);
            mNumClasses = classes;
        }
        inferenceMs += msSince(before);
        if (classes <= 0 || scores.size() < rows * classes * gridPerWindow || keep.size() < rows * stages)
        {
            throw Error("backend returned " + std::to_string(scores.size()) + " scores and "
                + std::to_string(keep.size()) + " keep counts for " + std::to_string(rows) + " inputs");
        }
        numClasses = classes;
        numStages = stages;
        allScores.insert(allScores.end(), scores.begin(), scores.begin() + count * classes * gridPerWindow);
        allKeep.insert(allKeep.end(), keep.begin(), keep.begin() + count * stages);
    }

    std::vector<float const*> windowScores(windowCount);
    for (size_t w = 0; w < windowCount; ++w)
    {
        windowScores[w] = allScores.data() + w * numClasses * gridPerWindow;
    }
    std::vector<float> grid;
    stitch(windowScores, numClasses, plan, grid);
    Result result;
    result.height = height;
    result.width = width;
    result.labels.resize(static_cast<size_t>(height) * width);
    labelsFromGrid(grid.data(), numClasses, plan, result.labels.data());
    result.keepRatio.assign(static_cast<size_t>(numStages), 0.0F);
    for (int32_t s = 0; s < numStages; ++s)
    {
        int64_t kept = 0;
        for (size_t w = 0; w < windowCount; ++w)
        {
            kept += allKeep[w * numStages + s];
        }
        result.keepRatio[s] = static_cast<float>(static_cast<double>(kept) / (gridPerWindow * windowCount));
    }
    result.windows = static_cast<int32_t>(windowCount);
    result.inferenceMs = inferenceMs;
    result.totalMs = msSince(start);
    return result;
}

#ifndef DTP_WITH_TENSORRT
bool hasTensorRT() noexcept
{
    return false;
}

std::unique_ptr<Backend> createTensorRTBackend(std::string const& enginePath, Options const& /*options*/)
{
    throw Error("cannot open " + enginePath + ": this dtp runtime was built without TensorRT; rebuild it with "
        "-DTensorRT_ROOT=<TensorRT install> (or give the Segmenter a Backend of your own)");
}
#endif

} // namespace dtp
