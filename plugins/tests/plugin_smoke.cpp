// SPDX-License-Identifier: Apache-2.0
//
// Host-only smoke test of the plugin library as shipped: dlopen it the way TensorRT's loadLibrary
// does, find the creators, create/clone plugins from fields and check their serialised fields and
// format rules. The glue's full contract is tested in plugin_contract_test.cpp. Needs TensorRT headers to build but neither TensorRT nor a GPU to run.
#include <NvInferRuntime.h>

#include <cstdio>
#include <cstring>
#include <dlfcn.h>
#include <string>

using namespace nvinfer1;

namespace
{
int gFailures = 0;

void expect(bool ok, char const* what)
{
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    gFailures += ok ? 0 : 1;
}

IPluginCreatorV3One* findCreator(IPluginCreatorInterface* const* creators, int32_t count, char const* name)
{
    for (int32_t i = 0; i < count; ++i)
    {
        auto* creator = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0
            && std::strcmp(creator->getPluginName(), name) == 0)
        {
            return creator;
        }
    }
    return nullptr;
}

DynamicPluginTensorDesc desc(DataType type)
{
    DynamicPluginTensorDesc d{};
    d.desc.type = type;
    d.desc.format = TensorFormat::kLINEAR;
    return d;
}
} // namespace

int main(int argc, char** argv)
{
    if (argc != 2)
    {
        std::fprintf(stderr, "usage: %s libdtp_plugins.so\n", argv[0]);
        return 2;
    }
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr)
    {
        std::fprintf(stderr, "dlopen failed: %s\n", dlerror());
        return 2;
    }
    using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
    expect(getCreators != nullptr, "getCreators is exported");
    expect(dlsym(lib, "setLoggerFinder") != nullptr, "setLoggerFinder is exported");
    if (getCreators == nullptr)
    {
        return 1;
    }
    int32_t count = 0;
    IPluginCreatorInterface* const* creators = getCreators(count);
    expect(count == 2, "two creators");

    IPluginCreatorV3One* split = findCreator(creators, count, "TokenSplit");
    IPluginCreatorV3One* reconstruct = findCreator(creators, count, "TokenReconstruct");
    expect(split != nullptr && reconstruct != nullptr, "TokenSplit and TokenReconstruct creators");
    if (split == nullptr || reconstruct == nullptr)
    {
        return 1;
    }
    expect(std::strcmp(split->getPluginNamespace(), "dtp") == 0 && std::strcmp(split->getPluginVersion(), "1") == 0,
        "namespace dtp, version 1");

    // Fields as the ONNX parser passes them, string attributes included.
    float threshold = 0.9F;
    int32_t topk = 5;
    int32_t classes = 150;
    char const ns[] = "dtp";
    char const version[] = "1";
    PluginField fields[] = {
        {"threshold", &threshold, PluginFieldType::kFLOAT32, 1},
        {"context_topk", &topk, PluginFieldType::kINT32, 1},
        {"num_classes", &classes, PluginFieldType::kINT32, 1},
        {"plugin_namespace", ns, PluginFieldType::kCHAR, 4},
        {"plugin_version", version, PluginFieldType::kCHAR, 2},
    };
    PluginFieldCollection fc{5, fields};
    IPluginV3* plugin = split->createPlugin("split", &fc, TensorRTPhase::kBUILD);
    expect(plugin != nullptr, "TokenSplit from parser-style fields");
    if (plugin == nullptr)
    {
        return 1;
    }
    IPluginV3* copy = plugin->clone();
    delete plugin; // the clone must not point into the original
    auto* runtime = static_cast<IPluginV3OneRuntime*>(copy->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginFieldCollection const* saved = runtime->getFieldsToSerialize();
    bool fieldsOk = saved != nullptr && saved->nbFields == 4;
    for (int32_t i = 0; fieldsOk && i < saved->nbFields; ++i)
    {
        std::string const name = saved->fields[i].name;
        if (name == "threshold")
        {
            fieldsOk = *static_cast<float const*>(saved->fields[i].data) == 0.9F;
        }
        else if (name == "context_topk")
        {
            fieldsOk = *static_cast<int32_t const*>(saved->fields[i].data) == 5;
        }
        else if (name == "max_tokens")
        {
            fieldsOk = *static_cast<int32_t const*>(saved->fields[i].data) == 0; // not given: 0
        }
        else
        {
            fieldsOk = name == "num_classes" && *static_cast<int32_t const*>(saved->fields[i].data) == 150;
        }
    }
    expect(fieldsOk, "clone serialises threshold, context_topk, num_classes, max_tokens");

    // Round trip: a plugin created from the serialised fields (runtime phase) serialises the same.
    IPluginV3* restored = split->createPlugin("split", saved, TensorRTPhase::kRUNTIME);
    expect(restored != nullptr, "TokenSplit from its own serialised fields");
    delete restored;

    auto* build = static_cast<IPluginV3OneBuild*>(copy->getCapabilityInterface(PluginCapabilityType::kBUILD));
    expect(build->getNbOutputs() == 3, "TokenSplit has 3 outputs (the last is the size tensor)");
    DynamicPluginTensorDesc io[7] = {desc(DataType::kHALF), desc(DataType::kFLOAT), desc(DataType::kINT32),
        desc(DataType::kINT32), desc(DataType::kHALF), desc(DataType::kINT32), desc(DataType::kINT64)};
    bool all = true;
    for (int32_t pos = 0; pos < 7; ++pos)
    {
        all = all && build->supportsFormatCombination(pos, io, 4, 3);
    }
    expect(all, "half tokens + float confidence + int32 + int64 size tensor accepted");
    io[4] = desc(DataType::kFLOAT);
    expect(!build->supportsFormatCombination(4, io, 4, 3), "kept_tokens type must follow tokens");
    io[0] = desc(DataType::kINT8);
    expect(!build->supportsFormatCombination(0, io, 4, 3), "int8 tokens refused");
    DataType outTypes[3];
    DataType inTypes[4] = {DataType::kHALF, DataType::kFLOAT, DataType::kINT32, DataType::kINT32};
    expect(build->getOutputDataTypes(outTypes, 3, inTypes, 4) == 0 && outTypes[0] == DataType::kHALF
            && outTypes[1] == DataType::kINT32 && outTypes[2] == DataType::kINT64,
        "output types half, int32, int64");
    delete copy;

    // Bad fields are refused with a logged error, not a crash.
    int32_t negative = -1;
    PluginField bad[] = {{"threshold", &threshold, PluginFieldType::kFLOAT32, 1},
        {"context_topk", &negative, PluginFieldType::kINT32, 1}};
    PluginFieldCollection badFc{2, bad};
    expect(split->createPlugin("bad", &badFc, TensorRTPhase::kBUILD) == nullptr, "negative context_topk refused");
    PluginField unknown[] = {{"threshold", &threshold, PluginFieldType::kFLOAT32, 1},
        {"tresh", &threshold, PluginFieldType::kFLOAT32, 1}};
    PluginFieldCollection unknownFc{2, unknown};
    expect(split->createPlugin("bad", &unknownFc, TensorRTPhase::kBUILD) == nullptr, "unknown field refused");

    PluginField parserOnly[] = {{"plugin_namespace", ns, PluginFieldType::kCHAR, 4}};
    PluginFieldCollection parserFc{1, parserOnly};
    IPluginV3* rec = reconstruct->createPlugin("rec", &parserFc, TensorRTPhase::kBUILD);
    expect(rec != nullptr, "TokenReconstruct from parser-style fields");
    if (rec != nullptr)
    {
        auto* rb = static_cast<IPluginV3OneBuild*>(rec->getCapabilityInterface(PluginCapabilityType::kBUILD));
        DynamicPluginTensorDesc rio[4]
            = {desc(DataType::kFLOAT), desc(DataType::kFLOAT), desc(DataType::kINT32), desc(DataType::kFLOAT)};
        bool ok = true;
        for (int32_t pos = 0; pos < 4; ++pos)
        {
            ok = ok && rb->supportsFormatCombination(pos, rio, 3, 1);
        }
        rio[1] = desc(DataType::kHALF);
        expect(ok && !rb->supportsFormatCombination(1, rio, 3, 1), "TokenReconstruct: updates follow base type");
        delete rec;
    }
    std::printf("%d check(s) failed\n", gFailures);
    return gFailures == 0 ? 0 : 1;
}
