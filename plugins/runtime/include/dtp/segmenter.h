// SPDX-License-Identifier: Apache-2.0
// dtp::Segmenter: an exported token-pruning segmenter behind a small C++ API.
//
//   dtp::Options options;                     // mean/std/patch/classes: read from the model
//   dtp::Segmenter segmenter("model.onnx", options);   // OpenVINO (CPU); .engine: TensorRT
//   dtp::Result result = segmenter.predict(rgb, height, width);   // HxWx3 uint8
//   result.labels[y * width + x];             // class index
#ifndef DTP_RUNTIME_SEGMENTER_H
#define DTP_RUNTIME_SEGMENTER_H

#include "dtp/processing.h"

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace dtp
{

//! What an inference engine has to do for the Segmenter. Implementations need not be
//! thread-safe: the Segmenter calls infer() under a lock.
class Backend
{
public:
    virtual ~Backend() = default;
    //! The network's fixed input (H, W), or an empty Size when it takes any multiple of the patch.
    virtual Size inputSize() const = 0;
    //! The fixed batch of the network (inputs are zero-padded to it), or 0 when dynamic.
    virtual int32_t fixedBatch() const = 0;
    //! The most inputs one infer() call may take.
    virtual int32_t maxBatch() const = 0;
    //! images: batch x 3 x size (normalised float32). Fills scores (batch x K x size/patch) and
    //! keepCounts (batch x S) and returns K; numStages receives S.
    virtual int32_t infer(float const* images, int32_t batch, Size size, int32_t patch, std::vector<float>& scores,
        std::vector<int32_t>& keepCounts, int32_t& numStages)
        = 0;
    //! The model's own dtp.* metadata (ONNX metadata_props: key -> JSON text) when the backend
    //! reads it from the model file; empty when it does not (then an engine's sidecar is read).
    virtual std::map<std::string, std::string> modelMetadata() const { return {}; }
};

struct Options
{
    //! Take mean, std, patchSize, trainedSize and classNames from the model when it carries them
    //! (an ONNX model's metadata_props; an engine's sidecar <engine>.json written by dtp-build).
    //! false: use the values below as given.
    bool modelMetadata{true};
    //! RGB mean and std on the 0-255 scale (the model's metadata: dtp.mean, dtp.std).
    std::array<float, 3> mean{123.675F, 116.28F, 103.53F};
    std::array<float, 3> std{58.395F, 57.12F, 57.375F};
    int32_t patchSize{16};
    Mode mode{Mode::kWHOLE};
    //! Slide windows; empty crop: the engine's fixed input size, else trainedSize.
    Size crop{};
    //! Empty: two thirds of the crop, on the patch.
    Size stride{};
    //! The size the model was trained at (dtp.trained_size): the crop of dynamic engines.
    Size trainedSize{};
    ColorOrder color{ColorOrder::kRGB};
    //! The dtp op library to load. TensorRT: the plugin library (empty: plugins already
    //! registered, or none needed). OpenVINO: libdtp_openvino_ops.so (empty: DTP_OPENVINO_EXTENSION,
    //! else the one built with this runtime).
    std::string pluginLibrary{};
    //! TensorRT: CUDA device index.
    int32_t device{0};
    //! Windows per infer() call for dynamic-batch engines.
    int32_t maxBatch{8};
    //! Which registered backend opens the model path (see registerBackend). "auto": by its
    //! suffix, "openvino" for .onnx / .xml, "tensorrt" for .engine / .plan.
    std::string backend{"auto"};
    //! Class names (dtp.class_names), filled from the model's metadata; may stay empty.
    std::vector<std::string> classNames{};
};

struct Result
{
    int32_t height{0};
    int32_t width{0};
    std::vector<int32_t> labels;  //!< height x width class indices
    std::vector<float> keepRatio; //!< per stage: tokens entering it / all tokens
    int32_t windows{0};           //!< network inputs run
    double inferenceMs{0.0};
    double totalMs{0.0};
};

//! True when this library was built with the TensorRT backend.
bool hasTensorRT() noexcept;
//! True when this library was built with the OpenVINO backend.
bool hasOpenVINO() noexcept;

class Segmenter
{
public:
    //! A model file, opened by the backend Options::backend names (default "auto": .onnx, or
    //! OpenVINO IR .xml, on OpenVINO (CPU); .engine / .plan on TensorRT). Throws dtp::Error when
    //! the library was built without that backend or the model cannot be loaded. See
    //! Options::modelMetadata.
    Segmenter(std::string const& modelPath, Options options);
    //! Any backend (tests, or an engine of your own).
    Segmenter(std::unique_ptr<Backend> backend, Options options);
    ~Segmenter();
    Segmenter(Segmenter const&) = delete;
    Segmenter& operator=(Segmenter const&) = delete;

    //! Segment one contiguous HxWx3 uint8 image (channel order: Options::color). Thread-safe.
    Result predict(uint8_t const* image, int32_t height, int32_t width);

    //! Number of classes (known after the first predict(); 0 before).
    int32_t numClasses() const;
    Options const& options() const { return mOptions; }

private:
    void checkOptions() const;

    std::unique_ptr<Backend> mBackend; // before mOptions: see the constructors
    Options mOptions;
    mutable std::mutex mMutex; // one inference at a time on the backend
    int32_t mNumClasses{0};
};

//! The TensorRT backend (throws Error when the library was built without TensorRT).
std::unique_ptr<Backend> createTensorRTBackend(std::string const& enginePath, Options const& options);

//! Opens a model file as a Backend, with the options the Segmenter was given.
using BackendFactory = std::function<std::unique_ptr<Backend>(std::string const& modelPath, Options const& options)>;

//! Make Options::backend == `name` use `factory` (replacing an earlier one, the built-in
//! "tensorrt" included; an empty factory removes `name`). Thread-safe.
void registerBackend(std::string const& name, BackendFactory factory);

//! The backend Options::backend names, for `modelPath`. Throws Error for an unknown name.
std::unique_ptr<Backend> createBackend(std::string const& modelPath, Options const& options);

} // namespace dtp

#endif // DTP_RUNTIME_SEGMENTER_H
