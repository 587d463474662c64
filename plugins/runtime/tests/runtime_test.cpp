// SPDX-License-Identifier: Apache-2.0
//
// The C++ runtime without TensorRT or a GPU: the Segmenter and the C API on a registered test
// backend, and the engine-independent pieces of the TensorRT backend (which I/O tensors it binds,
// loading the plugin library once per process, device buffers after a failed allocation).
// Run by ctest; prints "N check(s) failed".
#include "dtp/segmenter.h"
#include "dtp/segmenter_c.h"
#include "engine_support.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace
{

int gFailures = 0;

void expect(bool ok, std::string const& what)
{
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
    gFailures += ok ? 0 : 1;
}

template <typename F>
std::string errorOf(F&& f)
{
    try
    {
        f();
    }
    catch (dtp::Error const& e)
    {
        return e.what();
    }
    return "";
}

bool contains(std::string const& text, std::string const& part)
{
    return text.find(part) != std::string::npos;
}

// --- A backend that records what it was given --------------------------------------------------

struct Record
{
    std::vector<std::string> paths;
    std::vector<dtp::Options> options;
    std::vector<int32_t> batches;
};

Record gRecord;

//! A 32x32 network with 2 classes and 1 stage: class 1 wins on every token.
class TestBackend : public dtp::Backend
{
public:
    dtp::Size inputSize() const override { return {32, 32}; }
    int32_t fixedBatch() const override { return 0; }
    int32_t maxBatch() const override { return 8; }
    int32_t infer(float const* /*images*/, int32_t batch, dtp::Size size, int32_t patch, std::vector<float>& scores,
        std::vector<int32_t>& keepCounts, int32_t& numStages) override
    {
        if (mFailInfer)
        {
            throw dtp::Error("test backend: the engine failed on this input");
        }
        gRecord.batches.push_back(batch);
        int32_t const tokens = (size.height / patch) * (size.width / patch);
        scores.assign(static_cast<size_t>(batch) * 2 * tokens, 0.0F);
        for (int32_t b = 0; b < batch; ++b)
        {
            std::fill_n(scores.begin() + (static_cast<size_t>(b) * 2 + 1) * tokens, tokens, 1.0F);
        }
        keepCounts.assign(static_cast<size_t>(batch), tokens);
        numStages = 1;
        return 2;
    }
    bool mFailInfer{false};
};

//! A plugin registry as TensorRT's behaves: loading a library whose creators are registered
//! already fails (they cannot be registered twice).
struct FakeRegistry
{
    bool registered{false};
    int32_t loads{0};
    bool libraryRegisters{true};

    dtp::PluginRegistryHooks hooks()
    {
        dtp::PluginRegistryHooks h;
        h.registered = [this]() { return registered; };
        h.load = [this](std::string const&) {
            ++loads;
            if (registered)
            {
                return false; // the creators cannot be registered twice
            }
            registered = libraryRegisters;
            return true;
        };
        return h;
    }
};

FakeRegistry gRegistry;

std::unique_ptr<dtp::Backend> recordingFactory(std::string const& path, dtp::Options const& options)
{
    gRecord.paths.push_back(path);
    gRecord.options.push_back(options);
    if (contains(path, "broken"))
    {
        throw dtp::Error("cannot deserialise " + path + ": built by another TensorRT version");
    }
    // What the TensorRT backend does first.
    dtp::ensurePluginLibrary(options.pluginLibrary, gRegistry.hooks());
    auto backend = std::make_unique<TestBackend>();
    backend->mFailInfer = contains(path, "fails");
    return backend;
}

std::vector<uint8_t> image(int32_t height, int32_t width)
{
    return std::vector<uint8_t>(static_cast<size_t>(height) * width * 3, 100);
}

// --- Segmenter --------------------------------------------------------------------------------

void segmenterCases()
{
    dtp::registerBackend("tensorrt", recordingFactory);
    dtp::Options options;
    options.pluginLibrary = "/opt/dtp/libdtp_plugins.so";
    options.device = 3;
    options.maxBatch = 2;
    options.mode = dtp::Mode::kSLIDE;
    options.stride = {32, 32};
    gRecord = {};
    dtp::Segmenter first("model.engine", options);
    expect(gRecord.paths.size() == 1 && gRecord.paths[0] == "model.engine", "the backend opens the engine path");
    expect(gRecord.options.size() == 1 && gRecord.options[0].pluginLibrary == "/opt/dtp/libdtp_plugins.so"
            && gRecord.options[0].device == 3 && gRecord.options[0].maxBatch == 2,
        "the options reach the backend (plugin library, device, max batch)");
    expect(first.options().pluginLibrary == "/opt/dtp/libdtp_plugins.so", "and stay with the Segmenter");
    std::vector<uint8_t> const rgb = image(64, 64);
    dtp::Result const r1 = first.predict(rgb.data(), 64, 64);
    expect(r1.windows == 4 && gRecord.batches == std::vector<int32_t>({2, 2}),
        "4 windows run in batches of Options::maxBatch = 2");
    bool allOne = !r1.labels.empty();
    for (int32_t label : r1.labels)
    {
        allOne = allOne && label == 1;
    }
    expect(allOne && r1.keepRatio.size() == 1 && r1.keepRatio[0] == 1.0F, "labels and keep ratio from the backend");
    expect(gRegistry.loads == 1 && gRegistry.registered, "the plugin library is loaded for the first Segmenter");

    dtp::Segmenter second("model.engine", options);
    dtp::Result const r2 = second.predict(rgb.data(), 64, 64);
    expect(gRegistry.loads == 1 && r2.labels == r1.labels,
        "a second Segmenter in the same process works, without loading the library again");

    expect(contains(errorOf([&] { dtp::Segmenter broken("broken.engine", options); }), "another TensorRT version"),
        "a backend's error reaches the caller");
    dtp::Options unknown = options;
    unknown.backend = "openvino-not-registered";
    std::string const message = errorOf([&] { dtp::Segmenter s("model.xml", unknown); });
    expect(contains(message, "no backend 'openvino-not-registered'") && contains(message, "tensorrt"),
        "an unknown backend name is refused, listing the registered ones");
}

// --- C API ------------------------------------------------------------------------------------

void cApiCases()
{
    dtp_options options;
    dtp_options_init(&options);
    expect(options.max_batch == dtp::Options{}.maxBatch, "dtp_options_init: max_batch defaults to Options::maxBatch");
    options.max_batch = 3;
    options.mode = DTP_MODE_SLIDE;
    options.stride[0] = 32;
    options.stride[1] = 32;
    options.plugin_library = "/opt/dtp/libdtp_plugins.so";
    gRecord = {};
    dtp_segmenter* seg = dtp_segmenter_create("model.engine", &options);
    expect(seg != nullptr && gRecord.options.size() == 1 && gRecord.options[0].maxBatch == 3
            && gRecord.options[0].pluginLibrary == "/opt/dtp/libdtp_plugins.so",
        "C API: max_batch and plugin_library reach the backend");
    std::vector<uint8_t> const rgb = image(64, 64);
    std::vector<int32_t> labels(64 * 64, -1);
    float ratio = 0.0F;
    expect(seg != nullptr && dtp_segmenter_predict(seg, rgb.data(), 64, 64, labels.data(), &ratio, 1) == 0
            && gRecord.batches == std::vector<int32_t>({3, 1}) && labels[0] == 1 && ratio == 1.0F,
        "C API: predict runs the windows in batches of max_batch = 3");
    dtp_segmenter_destroy(seg);

    expect(dtp_segmenter_create("broken.engine", &options) == nullptr
            && contains(dtp_last_error(), "built by another TensorRT version"),
        "C API: a backend error at create becomes the message of dtp_last_error");
    dtp_segmenter* failing = dtp_segmenter_create("fails.engine", &options);
    expect(failing != nullptr && dtp_segmenter_predict(failing, rgb.data(), 64, 64, labels.data(), nullptr, 0) != 0
            && contains(dtp_last_error(), "the engine failed on this input"),
        "C API: a backend error at predict becomes the message of dtp_last_error");
    dtp_segmenter_destroy(failing);
    options.max_batch = 0;
    expect(dtp_segmenter_create("model.engine", &options) == nullptr && contains(dtp_last_error(), "maxBatch 0"),
        "C API: max_batch 0 is refused with a message");

    dtp::registerBackend("tensorrt", dtp::createTensorRTBackend);
    dtp_options_init(&options);
    dtp_segmenter* none = dtp_segmenter_create("model.engine", &options);
    std::string const want = dtp::hasTensorRT() ? "cannot read the engine model.engine" : "built without TensorRT";
    expect(none == nullptr && contains(dtp_last_error(), want), "C API: the built-in TensorRT backend's message: " + want);
}

// --- Engine-independent backend pieces ---------------------------------------------------------

void bindingCases()
{
    using dtp::TensorInfo;
    using dtp::TensorType;
    std::vector<TensorInfo> const base = {{"images", true, TensorType::kHALF}, {"scores", false, TensorType::kHALF},
        {"keep_counts", false, TensorType::kINT32}};
    dtp::BindingPlan plan = dtp::planBindings(base, "m.engine");
    expect(plan.images == TensorType::kHALF && plan.scores == TensorType::kHALF && plan.scratch.empty(),
        "bindings: images, scores, keep_counts");

    auto withLabels = base;
    withLabels.push_back({"labels", false, TensorType::kINT64});
    plan = dtp::planBindings(withLabels, "m.engine");
    expect(plan.scratch.size() == 1 && plan.scratch[0].name == "labels",
        "bindings: the labels output of --postprocess argmax engines is bound (to scratch memory)");

    auto extra = base;
    extra.push_back({"attention_map", false, TensorType::kFLOAT});
    expect(contains(errorOf([&] { dtp::planBindings(extra, "m.engine"); }), "output 'attention_map' is not an output"),
        "bindings: an unknown output is refused by name");
    auto extraInput = base;
    extraInput.push_back({"mask", true, TensorType::kFLOAT});
    expect(contains(errorOf([&] { dtp::planBindings(extraInput, "m.engine"); }), "input 'mask'"),
        "bindings: an unknown input is refused by name");
    auto keep64 = base;
    keep64[2].type = TensorType::kINT64;
    expect(contains(errorOf([&] { dtp::planBindings(keep64, "m.engine"); }), "'keep_counts' is int64, expected int32"),
        "bindings: keep_counts must be int32");
    std::vector<TensorInfo> const noScores = {base[0], base[2]};
    expect(contains(errorOf([&] { dtp::planBindings(noScores, "m.engine"); }), "m.engine has no tensor 'scores'"),
        "bindings: a missing scores output is refused");
}

void pluginLibraryCases()
{
    FakeRegistry registry;
    dtp::ensurePluginLibrary("", registry.hooks());
    expect(registry.loads == 0, "plugins: no library, nothing loaded");
    dtp::ensurePluginLibrary("libdtp_plugins.so", registry.hooks());
    dtp::ensurePluginLibrary("libdtp_plugins.so", registry.hooks());
    expect(registry.loads == 1, "plugins: loaded once for two backends");

    FakeRegistry app;
    app.registered = true; // the application registered the creators itself
    dtp::ensurePluginLibrary("libdtp_plugins.so", app.hooks());
    expect(app.loads == 0, "plugins: creators already registered, library not loaded");

    FakeRegistry wrong;
    wrong.libraryRegisters = false;
    std::string const message = errorOf([&] { dtp::ensurePluginLibrary("/tmp/libother.so", wrong.hooks()); });
    expect(contains(message, "/tmp/libother.so") && contains(message, "TokenSplit"),
        "plugins: a library that registers no dtp creators is named in the error");
    FakeRegistry failing;
    failing.libraryRegisters = false;
    dtp::PluginRegistryHooks hooks = failing.hooks();
    hooks.load = [](std::string const&) { return false; };
    expect(contains(errorOf([&] { dtp::ensurePluginLibrary("/nowhere/libdtp_plugins.so", hooks); }),
               "cannot load the plugin library /nowhere/libdtp_plugins.so"),
        "plugins: a library that does not load is named in the error");
}

void bufferCases()
{
    int32_t allocations = 0;
    bool fail = false;
    std::vector<std::unique_ptr<char[]>> blocks;
    dtp::GrowBuffer buffer(
        [&](size_t bytes) -> void* {
            ++allocations;
            if (fail)
            {
                return nullptr;
            }
            blocks.emplace_back(new char[bytes]);
            return blocks.back().get();
        },
        [](void*) {});
    void* small = buffer.reserve(64, "test");
    expect(small != nullptr && buffer.capacity() == 64 && buffer.reserve(32, "test") == small && allocations == 1,
        "buffer: grows only when needed");
    fail = true;
    expect(contains(errorOf([&] { buffer.reserve(128, "scores"); }), "scores"), "buffer: a failed allocation throws");
    expect(buffer.capacity() == 0 && buffer.data() == nullptr, "buffer: after a failed allocation it holds nothing");
    fail = false;
    void* again = buffer.reserve(32, "test");
    expect(again != nullptr && buffer.capacity() == 32,
        "buffer: the next (smaller) reserve allocates again instead of returning null");
}

} // namespace

int main()
{
    segmenterCases();
    cApiCases();
    bindingCases();
    pluginLibraryCases();
    bufferCases();
    std::printf("%d check(s) failed\n", gFailures);
    return gFailures == 0 ? 0 : 1;
}
