// SPDX-License-Identifier: Apache-2.0
// OpenVINO backend: reads an ONNX model (or IR) with the dtp extension loaded, compiles it for
// the CPU at f32 and runs it on the named tensors images -> scores, keep_counts. Compiled only
// when OpenVINO is found (DTP_WITH_OPENVINO).
#include "dtp/openvino_backend.h"

#include <openvino/openvino.hpp>

#include <cstdlib>
#include <fstream>

namespace dtp
{
namespace
{

constexpr char const* kSCORES = "scores";
constexpr char const* kKEEP_COUNTS = "keep_counts";
// The metadata keys the runtime reads (dtp_deploy/metadata.py).
constexpr char const* kMETADATA_KEYS[] = {"dtp.mean", "dtp.std", "dtp.patch_size", "dtp.trained_size",
    "dtp.class_names", "dtp.input_size", "dtp.flavour", "dtp.arch", "dtp.method", "dtp.precision"};

bool fileExists(std::string const& path)
{
    return std::ifstream(path).good();
}

bool hasOutput(std::shared_ptr<ov::Model> const& model, char const* name)
{
    for (auto const& output : model->outputs())
    {
        if (output.get_names().count(name))
        {
            return true;
        }
    }
    return false;
}

class OpenVINOBackend final : public Backend
{
public:
    OpenVINOBackend(std::string const& path, Options const& options)
    {
        std::string const extension = openvinoExtensionPath(options);
        if (!extension.empty())
        {
            try
            {
                mCore.add_extension(extension);
            }
            catch (std::exception const& err)
            {
                throw Error("cannot load the dtp OpenVINO extension " + extension + ": " + err.what()
                    + "; build it (plugins/openvino) or point Options::pluginLibrary at libdtp_openvino_ops.so");
            }
        }
        if (!fileExists(path))
        {
            throw Error("model " + path + " does not exist");
        }
        std::shared_ptr<ov::Model> model;
        try
        {
            model = mCore.read_model(path);
        }
        catch (std::exception const& err)
        {
            std::string const what = err.what();
            if (extension.empty() && what.find("TokenSplit") != std::string::npos)
            {
                throw Error(path + " is a plugin-flavour graph (dtp::TokenSplit/TokenReconstruct nodes): load the "
                    "dtp OpenVINO extension (Options::pluginLibrary = libdtp_openvino_ops.so, or "
                    "DTP_OPENVINO_EXTENSION), or export the portable flavour");
            }
            throw Error("OpenVINO cannot read " + path + ": " + what);
        }
        if (model->inputs().size() != 1)
        {
            throw Error(path + ": expected one input 'images', the graph has " + std::to_string(model->inputs().size())
                + "; re-export it with dtp-export");
        }
        for (char const* name : {kSCORES, kKEEP_COUNTS})
        {
            if (!hasOutput(model, name))
            {
                throw Error(path + ": the graph has no output '" + name + "'; re-export it with dtp-export");
            }
        }
        // The ONNX frontend keeps metadata_props in rt_info["framework"] (and IR keeps them).
        for (char const* key : kMETADATA_KEYS)
        {
            if (model->has_rt_info("framework", key))
            {
                mMetadata[key] = model->get_rt_info<std::string>("framework", key);
            }
        }
        ov::PartialShape const shape = model->input().get_partial_shape();
        if (shape.rank().is_static() && shape.rank().get_length() == 4)
        {
            mFixedBatch = shape[0].is_static() ? static_cast<int32_t>(shape[0].get_length()) : 0;
            if (shape[2].is_static() && shape[3].is_static())
            {
                mInputSize = {static_cast<int32_t>(shape[2].get_length()), static_cast<int32_t>(shape[3].get_length())};
            }
        }
        mInputType = model->input().get_element_type();
        try
        {
            // f32: OpenVINO's own default is bf16 on CPUs that have it, which changes the token
            // confidences and so the exit decisions.
            mCompiled = mCore.compile_model(model, "CPU",
                ov::hint::inference_precision(ov::element::f32),
                ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY));
            mRequest = mCompiled.create_infer_request();
        }
        catch (std::exception const& err)
        {
            throw Error("OpenVINO cannot compile " + path + " for the CPU: " + err.what());
        }
    }

    Size inputSize() const override { return mInputSize; }
    int32_t fixedBatch() const override { return mFixedBatch; }
    int32_t maxBatch() const override { return mFixedBatch > 0 ? mFixedBatch : kMAX_DYNAMIC_BATCH; }
    MetadataProps modelMetadata() const override { return mMetadata; }

    int32_t infer(float const* images, int32_t batch, Size size, int32_t patch, std::vector<float>& scores,
        std::vector<int32_t>& keepCounts, int32_t& numStages) override
    {
        ov::Shape const shape{static_cast<size_t>(batch), 3, static_cast<size_t>(size.height),
            static_cast<size_t>(size.width)};
        ov::Tensor input;
        if (mInputType == ov::element::f16)
        {
            input = ov::Tensor(ov::element::f16, shape);
            auto* half = input.data<ov::float16>();
            for (size_t i = 0; i < input.get_size(); ++i)
            {
                half[i] = ov::float16(images[i]);
            }
        }
        else
        {
            // Wraps the caller's buffer: no copy, only read.
            input = ov::Tensor(ov::element::f32, shape, const_cast<float*>(images));
        }
        try
        {
            mRequest.set_input_tensor(input); // the one input (named images by dtp-export)
            mRequest.infer();
        }
        catch (std::exception const& err)
        {
            throw Error(std::string("OpenVINO inference failed: ") + err.what());
        }
        ov::Tensor const out = mRequest.get_tensor(kSCORES);
        ov::Shape const outShape = out.get_shape();
        if (outShape.size() != 4 || outShape[0] != static_cast<size_t>(batch)
            || outShape[2] != static_cast<size_t>(size.height / patch) || outShape[3] != static_cast<size_t>(size.width / patch))
        {
            throw Error("scores of shape " + outShape.to_string() + " for an input of " + shape.to_string()
                + "; expected [batch, K, H/patch, W/patch]");
        }
        scores.resize(out.get_size());
        if (out.get_element_type() == ov::element::f16)
        {
            auto const* half = out.data<ov::float16 const>();
            for (size_t i = 0; i < scores.size(); ++i)
            {
                scores[i] = static_cast<float>(half[i]);
            }
        }
        else
        {
            auto const* f = out.data<float const>();
            std::copy(f, f + scores.size(), scores.begin());
        }
        ov::Tensor const keep = mRequest.get_tensor(kKEEP_COUNTS);
        numStages = keep.get_shape().size() == 2 ? static_cast<int32_t>(keep.get_shape()[1]) : 0;
        keepCounts.resize(keep.get_size());
        if (keep.get_element_type() == ov::element::i64)
        {
            auto const* k = keep.data<int64_t const>();
            std::transform(k, k + keepCounts.size(), keepCounts.begin(), [](int64_t v) { return static_cast<int32_t>(v); });
        }
        else
        {
            auto const* k = keep.data<int32_t const>();
            std::copy(k, k + keepCounts.size(), keepCounts.begin());
        }
        return static_cast<int32_t>(outShape[1]);
    }

private:
    static constexpr int32_t kMAX_DYNAMIC_BATCH = 64;
    ov::Core mCore;
    ov::CompiledModel mCompiled;
    ov::InferRequest mRequest;
    Size mInputSize{};
    int32_t mFixedBatch{0};
    ov::element::Type mInputType{ov::element::f32};
    MetadataProps mMetadata;
};

} // namespace

bool hasOpenVINO() noexcept
{
    return true;
}

std::string openvinoExtensionPath(Options const& options)
{
    if (!options.pluginLibrary.empty())
    {
        return options.pluginLibrary;
    }
    if (char const* env = std::getenv("DTP_OPENVINO_EXTENSION"))
    {
        if (*env != '\0')
        {
            return env;
        }
    }
#ifdef DTP_OPENVINO_EXTENSION_DEFAULT
    if (fileExists(DTP_OPENVINO_EXTENSION_DEFAULT))
    {
        return DTP_OPENVINO_EXTENSION_DEFAULT;
    }
#endif
    return {};
}

std::unique_ptr<Backend> createOpenVINOBackend(std::string const& modelPath, Options const& options)
{
    return std::make_unique<OpenVINOBackend>(modelPath, options);
}

} // namespace dtp
