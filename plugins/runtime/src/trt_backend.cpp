// SPDX-License-Identifier: Apache-2.0
// TensorRT backend: deserialises an engine (loading the dtp plugin library first, so that the
// TokenSplit/TokenReconstruct plugins are registered) and runs it with enqueueV3 on named
// tensors. Compiled only when TensorRT is found (DTP_WITH_TENSORRT).
#include "dtp/segmenter.h"
#include "engine_support.h"

#include <NvInferRuntime.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <utility>
#include <vector>

namespace dtp
{
namespace
{

constexpr char const* kIMAGES = "images";
constexpr char const* kSCORES = "scores";
constexpr char const* kKEEP_COUNTS = "keep_counts";

class Logger : public nvinfer1::ILogger
{
public:
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            std::cerr << "[TensorRT] " << msg << '\n';
        }
    }
};

void check(cudaError_t status, char const* what)
{
    if (status != cudaSuccess)
    {
        throw Error(std::string(what) + ": " + cudaGetErrorString(status));
    }
}

GrowBuffer deviceBuffer()
{
    return GrowBuffer(
        [](size_t bytes) -> void* {
            void* ptr = nullptr;
            return cudaMalloc(&ptr, bytes) == cudaSuccess ? ptr : nullptr;
        },
        [](void* ptr) { cudaFree(ptr); });
}

TensorType toTensorType(nvinfer1::DataType type)
{
    switch (type)
    {
    case nvinfer1::DataType::kFLOAT: return TensorType::kFLOAT;
    case nvinfer1::DataType::kHALF: return TensorType::kHALF;
    case nvinfer1::DataType::kINT32: return TensorType::kINT32;
    case nvinfer1::DataType::kINT64: return TensorType::kINT64;
    default: return TensorType::kOTHER;
    }
}

size_t elementSize(TensorType type)
{
    switch (type)
    {
    case TensorType::kFLOAT:
    case TensorType::kINT32: return 4;
    case TensorType::kHALF: return 2;
    case TensorType::kINT64: return 8;
    case TensorType::kOTHER: break;
    }
    throw Error("engine tensor of an unsupported data type");
}

//! The dtp plugins through TensorRT's registry (the process-wide one the runtime deserialises with).
PluginRegistryHooks registryHooks(nvinfer1::IPluginRegistry& registry)
{
    PluginRegistryHooks hooks;
    hooks.registered = [&registry]() {
        return registry.getCreator("TokenSplit", "1", "dtp") != nullptr
            && registry.getCreator("TokenReconstruct", "1", "dtp") != nullptr;
    };
    hooks.load = [&registry](std::string const& path) { return registry.loadLibrary(path.c_str()) != nullptr; };
    return hooks;
}

int64_t volume(nvinfer1::Dims const& dims)
{
    int64_t n = 1;
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        n *= dims.d[i];
    }
    return n;
}

class TensorRTBackend final : public Backend
{
public:
    TensorRTBackend(std::string const& path, Options const& options)
        : mPath(path)
        , mDevice(options.device)
    {
        check(cudaSetDevice(mDevice), "cudaSetDevice");
        mRuntime.reset(nvinfer1::createInferRuntime(mLogger));
        if (!mRuntime)
        {
            throw Error("TensorRT: createInferRuntime failed");
        }
        ensurePluginLibrary(options.pluginLibrary, registryHooks(mRuntime->getPluginRegistry()));
        std::ifstream file(path, std::ios::binary);
        if (!file)
        {
            throw Error("cannot read the engine " + path);
        }
        std::vector<char> blob((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
        mEngine.reset(mRuntime->deserializeCudaEngine(blob.data(), blob.size()));
        if (!mEngine)
        {
            throw Error("TensorRT cannot deserialise " + path
                + " (built by another TensorRT version, or its dtp plugins are not loaded: set Options::pluginLibrary)");
        }
        mContext.reset(mEngine->createExecutionContext());
        if (!mContext)
        {
            throw Error("TensorRT: createExecutionContext failed for " + path);
        }
        std::vector<TensorInfo> tensors;
        for (int32_t i = 0; i < mEngine->getNbIOTensors(); ++i)
        {
            char const* name = mEngine->getIOTensorName(i);
            tensors.push_back({name, mEngine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT,
                toTensorType(mEngine->getTensorDataType(name))});
        }
        mPlan = planBindings(tensors, path);
        for (TensorInfo const& t : mPlan.scratch)
        {
            mScratch.emplace_back(t, deviceBuffer());
        }
        nvinfer1::Dims const in = mEngine->getTensorShape(kIMAGES);
        if (in.nbDims != 4)
        {
            throw Error(path + ": input 'images' has " + std::to_string(in.nbDims) + " dimensions, expected 4 (NCHW)");
        }
        mFixedBatch = in.d[0] > 0 ? static_cast<int32_t>(in.d[0]) : 0;
        mMaxBatch = mFixedBatch > 0 ? mFixedBatch
            : static_cast<int32_t>(mEngine->getProfileShape(kIMAGES, 0, nvinfer1::OptProfileSelector::kMAX).d[0]);
        if (in.d[2] > 0 && in.d[3] > 0)
        {
            mInputSize = {static_cast<int32_t>(in.d[2]), static_cast<int32_t>(in.d[3])};
        }
        check(cudaStreamCreate(&mStream), "cudaStreamCreate");
    }

    ~TensorRTBackend() override
    {
        if (mStream != nullptr)
        {
            cudaStreamDestroy(mStream);
        }
    }

    Size inputSize() const override { return mInputSize; }
    int32_t fixedBatch() const override { return mFixedBatch; }
    int32_t maxBatch() const override { return std::max(1, mMaxBatch); }

    int32_t infer(float const* images, int32_t batch, Size size, int32_t /*patch*/, std::vector<float>& scores,
        std::vector<int32_t>& keepCounts, int32_t& numStages) override
    {
        check(cudaSetDevice(mDevice), "cudaSetDevice"); // infer() may run on any thread
        nvinfer1::Dims4 const dims{batch, 3, size.height, size.width};
        if (!mContext->setInputShape(kIMAGES, dims))
        {
            throw Error(mPath + ": the engine does not take input shape (" + std::to_string(batch) + ", 3, "
                + std::to_string(size.height) + ", " + std::to_string(size.width) + ")");
        }
        size_t const count = static_cast<size_t>(volume(dims));
        // Host-side conversion keeps the runtime free of CUDA kernels of its own.
        std::vector<__half> half;
        void const* hostInput = images;
        if (mPlan.images == TensorType::kHALF)
        {
            half.resize(count);
            for (size_t i = 0; i < count; ++i)
            {
                half[i] = __float2half_rn(images[i]);
            }
            hostInput = half.data();
        }
        size_t const inBytes = count * elementSize(mPlan.images);
        void* input = mInput.reserve(inBytes, "images");
        nvinfer1::Dims const scoresDims = mContext->getTensorShape(kSCORES);
        nvinfer1::Dims const keepDims = mContext->getTensorShape(kKEEP_COUNTS);
        if (scoresDims.nbDims != 4 || keepDims.nbDims != 2 || volume(scoresDims) < 0 || volume(keepDims) < 0)
        {
            throw Error(mPath + ": unexpected output shapes (scores must be 4-D, keep_counts 2-D)");
        }
        size_t const scoresCount = static_cast<size_t>(volume(scoresDims));
        size_t const keepCount = static_cast<size_t>(volume(keepDims));
        void* scoresPtr = mScores.reserve(scoresCount * elementSize(mPlan.scores), "scores");
        void* keepPtr = mKeep.reserve(keepCount * sizeof(int32_t), "keep_counts");
        check(cudaMemcpyAsync(input, hostInput, inBytes, cudaMemcpyHostToDevice, mStream), "copy images");
        bool bound = mContext->setTensorAddress(kIMAGES, input) && mContext->setTensorAddress(kSCORES, scoresPtr)
            && mContext->setTensorAddress(kKEEP_COUNTS, keepPtr);
        // enqueueV3 needs an address for every I/O tensor, also those the runtime does not read.
        for (auto& [tensor, buffer] : mScratch)
        {
            int64_t const n = volume(mContext->getTensorShape(tensor.name.c_str()));
            if (n < 0)
            {
                throw Error(mPath + ": output '" + tensor.name + "' has no shape for this input");
            }
            bound = bound
                && mContext->setTensorAddress(tensor.name.c_str(),
                    buffer.reserve(static_cast<size_t>(n) * elementSize(tensor.type), tensor.name.c_str()));
        }
        if (!bound)
        {
            throw Error(mPath + ": setTensorAddress failed");
        }
        if (!mContext->enqueueV3(mStream))
        {
            throw Error(mPath + ": enqueueV3 failed (see the TensorRT messages above)");
        }
        scores.resize(scoresCount);
        keepCounts.resize(keepCount);
        std::vector<__half> halfScores;
        if (mPlan.scores == TensorType::kHALF)
        {
            halfScores.resize(scoresCount);
            check(cudaMemcpyAsync(halfScores.data(), scoresPtr, scoresCount * 2, cudaMemcpyDeviceToHost, mStream),
                "copy scores");
        }
        else
        {
            check(cudaMemcpyAsync(scores.data(), scoresPtr, scoresCount * 4, cudaMemcpyDeviceToHost, mStream),
                "copy scores");
        }
        check(cudaMemcpyAsync(keepCounts.data(), keepPtr, keepCount * sizeof(int32_t), cudaMemcpyDeviceToHost, mStream),
            "copy keep_counts");
        check(cudaStreamSynchronize(mStream), "cudaStreamSynchronize");
        for (size_t i = 0; i < halfScores.size(); ++i)
        {
            scores[i] = __half2float(halfScores[i]);
        }
        numStages = static_cast<int32_t>(keepDims.d[1]);
        return static_cast<int32_t>(scoresDims.d[1]);
    }

private:
    std::string mPath;
    int32_t mDevice{0};
    Logger mLogger;
    std::unique_ptr<nvinfer1::IRuntime> mRuntime;
    std::unique_ptr<nvinfer1::ICudaEngine> mEngine;
    std::unique_ptr<nvinfer1::IExecutionContext> mContext;
    BindingPlan mPlan;
    int32_t mFixedBatch{0};
    int32_t mMaxBatch{1};
    Size mInputSize{};
    cudaStream_t mStream{nullptr};
    GrowBuffer mInput{deviceBuffer()};
    GrowBuffer mScores{deviceBuffer()};
    GrowBuffer mKeep{deviceBuffer()};
    std::vector<std::pair<TensorInfo, GrowBuffer>> mScratch;
};

} // namespace

bool hasTensorRT() noexcept
{
    return true;
}

std::unique_ptr<Backend> createTensorRTBackend(std::string const& enginePath, Options const& options)
{
    return std::make_unique<TensorRTBackend>(enginePath, options);
}

} // namespace dtp
