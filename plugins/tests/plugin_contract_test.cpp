// SPDX-License-Identifier: Apache-2.0
//
// Host-side contract test of the plugin glue: the build-phase methods called the way TensorRT
// calls them, through an IExprBuilder that enforces the header's rules (NvInferRuntime.h,
// IExprBuilder::declareSizeTensor: `opt` must not depend on a size tensor; the upper bound sizes
// the output buffers, so it must not be one either), on the chain split -> split -> reconstruct
// of the exported graphs. Creator fields are built the way TensorRT's ONNX parser builds them
// (onnx-tensorrt, loadFields: only the creator's declared fields, FLOAT -> kFLOAT32 scalar,
// INT -> kINT32 scalar, STRING -> kCHAR; attributes the node lacks are skipped; plugin_version and
// plugin_namespace are consumed by the parser to find the creator).
//
//   dtp_plugin_contract_test                      # built-in cases
//   dtp_plugin_contract_test --graph nodes.txt    # also the nodes of an exported graph
//
// nodes.txt (written by tests/test_plugins_build.py from a graph dtp-export wrote):
//   grid <h> <w>                       the token grid of the exported input size
//   node <op_type> <name>              a dtp node, in graph order
//   attr <name> FLOAT|INT|STRING <v>   its attributes (FLOAT as a C99 hex float)
//
// Needs TensorRT headers to build, neither TensorRT nor a GPU to run (enqueue is not called).
#include "common/pluginRegistration.h"
#include "tokenReconstructPlugin/tokenReconstructPlugin.h"
#include "tokenSplitPlugin/tokenSplitKernel.h"
#include "tokenSplitPlugin/tokenSplitPlugin.h"

#include <NvInferRuntime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

int gFailures = 0;

void expect(bool ok, std::string const& what)
{
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
    gFailures += ok ? 0 : 1;
}

// --- An IExprBuilder with TensorRT's rules ---------------------------------------------------

//! What an expression is: a build-time constant, an input dimension known only at run time, or
//! something that depends on a size tensor (opaque: no value, never a bound).
struct ExprState : apiv::VDimensionExpr
{
    bool constant{false};
    int64_t value{0};
    bool sizeTensor{false};    //!< made by declareSizeTensor
    bool dependsOnSize{false}; //!< a size tensor or an operation on one
    bool isConstant() const override { return constant; }
    int64_t getConstantValue() const override { return constant ? value : std::numeric_limits<int64_t>::min(); }
    bool isSizeTensor() const override { return sizeTensor; }
};

class Expr : public IDimensionExpr
{
public:
    explicit Expr(ExprState state)
        : mState(state)
    {
        mImpl = &mState;
    }
    ExprState const& state() const { return mState; }

private:
    ExprState mState;
};

ExprState const& stateOf(IDimensionExpr const& e)
{
    return static_cast<Expr const&>(e).state();
}

struct Declared
{
    int32_t outputIndex;
    ExprState opt;
    ExprState upper;
};

class RuleBuilder : public apiv::VExprBuilder
{
public:
    std::deque<Expr> exprs; // stable addresses
    std::vector<std::string> violations;
    std::vector<Declared> declared;
    bool refuseOperations{false}; //!< make operation() fail, as TensorRT may

    IDimensionExpr const* make(ExprState s)
    {
        exprs.emplace_back(s);
        return &exprs.back();
    }
    IDimensionExpr const* runtimeDim()
    {
        return make(ExprState{});
    }

    IDimensionExpr const* constant(int64_t value) override
    {
        ExprState s;
        s.constant = true;
        s.value = value;
        return make(s);
    }

    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& first, IDimensionExpr const& second) override
    {
        if (refuseOperations)
        {
            return nullptr;
        }
        ExprState const& a = stateOf(first);
        ExprState const& b = stateOf(second);
        ExprState s;
        s.dependsOnSize = a.dependsOnSize || b.dependsOnSize;
        if (a.constant && b.constant)
        {
            s.constant = true;
            switch (op)
            {
            case DimensionOperation::kSUM: s.value = a.value + b.value; break;
            case DimensionOperation::kPROD: s.value = a.value * b.value; break;
            case DimensionOperation::kMAX: s.value = std::max(a.value, b.value); break;
            case DimensionOperation::kMIN: s.value = std::min(a.value, b.value); break;
            case DimensionOperation::kSUB: s.value = a.value - b.value; break;
            case DimensionOperation::kCEIL_DIV: s.value = (a.value + b.value - 1) / b.value; break;
            case DimensionOperation::kFLOOR_DIV: s.value = a.value / b.value; break;
            default: s.constant = false; break;
            }
        }
        return make(s);
    }

    IDimensionExpr const* declareSizeTensor(int32_t outputIndex, IDimensionExpr const& opt, IDimensionExpr const& upper) override
    {
        ExprState const& o = stateOf(opt);
        ExprState const& u = stateOf(upper);
        if (o.dependsOnSize)
        {
            violations.push_back("declareSizeTensor: opt depends on a size tensor");
            return nullptr;
        }
        if (u.dependsOnSize)
        {
            violations.push_back("declareSizeTensor: upper bound depends on a size tensor");
            return nullptr;
        }
        declared.push_back({outputIndex, o, u});
        ExprState s;
        s.sizeTensor = true;
        s.dependsOnSize = true;
        return make(s);
    }
};

class TestExprBuilder : public IExprBuilder
{
public:
    TestExprBuilder()
    {
        mImpl = &rules;
    }
    RuleBuilder rules;
};

// --- Plugins from creators ---------------------------------------------------------------------

IPluginCreatorV3One* creator(char const* name)
{
    int32_t count = 0;
    IPluginCreatorInterface* const* creators = getCreators(count);
    for (int32_t i = 0; i < count; ++i)
    {
        auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0
            && std::strcmp(c->getPluginName(), name) == 0)
        {
            return c;
        }
    }
    return nullptr;
}

template <typename T>
T* capability(IPluginV3* plugin, PluginCapabilityType type)
{
    return plugin != nullptr ? static_cast<T*>(plugin->getCapabilityInterface(type)) : nullptr;
}

IPluginV3OneBuild* build(IPluginV3* plugin)
{
    return capability<IPluginV3OneBuild>(plugin, PluginCapabilityType::kBUILD);
}

//! One ONNX node attribute, as the exporter wrote it.
struct Attribute
{
    std::string type; // FLOAT, INT or STRING
    std::string value;
};

struct Node
{
    std::string opType;
    std::string name;
    std::map<std::string, Attribute> attributes;
};

//! The fields onnx-tensorrt's loadFields builds for `node` and `c`: walk the creator's declared
//! fields, skip those the node lacks, convert FLOAT to a float32 scalar, INT to an int32 scalar,
//! STRING to chars with the terminating NUL.
struct ParserFields
{
    std::map<std::string, std::vector<uint8_t>> data;
    std::vector<PluginField> fields;
    PluginFieldCollection collection{};

    ParserFields(Node const& node, IPluginCreatorV3One& c)
    {
        PluginFieldCollection const* names = c.getFieldNames();
        for (int32_t i = 0; i < names->nbFields; ++i)
        {
            auto const it = node.attributes.find(names->fields[i].name);
            if (it == node.attributes.end())
            {
                continue;
            }
            // Keyed storage keeps the name and the value alive, as the parser's fieldData does.
            auto const slot = data.emplace(it->first, std::vector<uint8_t>{}).first;
            std::string const& key = slot->first;
            std::vector<uint8_t>& buffer = slot->second;
            PluginField field{};
            field.name = key.c_str();
            if (it->second.type == "FLOAT")
            {
                float const v = std::strtof(it->second.value.c_str(), nullptr);
                buffer.resize(sizeof v);
                std::memcpy(buffer.data(), &v, sizeof v);
                field.type = PluginFieldType::kFLOAT32;
                field.length = 1;
            }
            else if (it->second.type == "INT")
            {
                // The parser reads an INT attribute as int32 (attrs.get<int32_t>).
                int32_t const v = static_cast<int32_t>(std::strtoll(it->second.value.c_str(), nullptr, 10));
                buffer.resize(sizeof v);
                std::memcpy(buffer.data(), &v, sizeof v);
                field.type = PluginFieldType::kINT32;
                field.length = 1;
            }
            else
            {
                buffer.assign(it->second.value.begin(), it->second.value.end());
                buffer.push_back('\0');
                field.type = PluginFieldType::kCHAR;
                field.length = static_cast<int32_t>(buffer.size());
            }
            field.data = buffer.data();
            fields.push_back(field);
        }
        collection.nbFields = static_cast<int32_t>(fields.size());
        collection.fields = fields.data();
    }
};

Node splitNode(float threshold, int32_t topk, int32_t classes, int32_t maxTokens)
{
    char hex[64];
    std::snprintf(hex, sizeof hex, "%a", static_cast<double>(threshold));
    Node n{"TokenSplit", "split", {}};
    n.attributes["threshold"] = {"FLOAT", hex};
    n.attributes["context_topk"] = {"INT", std::to_string(topk)};
    n.attributes["num_classes"] = {"INT", std::to_string(classes)};
    if (maxTokens >= 0)
    {
        n.attributes["max_tokens"] = {"INT", std::to_string(maxTokens)};
    }
    n.attributes["plugin_namespace"] = {"STRING", "dtp"};
    n.attributes["plugin_version"] = {"STRING", "1"};
    return n;
}

Node reconstructNode()
{
    Node n{"TokenReconstruct", "reconstruct", {}};
    n.attributes["plugin_namespace"] = {"STRING", "dtp"};
    n.attributes["plugin_version"] = {"STRING", "1"};
    return n;
}

std::unique_ptr<IPluginV3> createFromNode(Node const& node, TensorRTPhase phase = TensorRTPhase::kBUILD)
{
    // The parser finds the creator by op type, plugin_version and plugin_namespace.
    IPluginCreatorV3One* c = creator(node.opType.c_str());
    if (c == nullptr)
    {
        return nullptr;
    }
    auto const ns = node.attributes.find("plugin_namespace");
    auto const version = node.attributes.find("plugin_version");
    if (ns == node.attributes.end() || ns->second.value != c->getPluginNamespace() || version == node.attributes.end()
        || version->second.value != c->getPluginVersion())
    {
        return nullptr;
    }
    ParserFields fields(node, *c);
    return std::unique_ptr<IPluginV3>(c->createPlugin(node.name.c_str(), &fields.collection, phase));
}

// --- Shape chain ---------------------------------------------------------------------------------

DimsExprs dims(std::initializer_list<IDimensionExpr const*> list)
{
    DimsExprs d{};
    d.nbDims = static_cast<int32_t>(list.size());
    int32_t i = 0;
    for (IDimensionExpr const* e : list)
    {
        d.d[i++] = e;
    }
    return d;
}

struct SplitShapes
{
    bool ok{false};
    DimsExprs keptTokens{};
    DimsExprs keptIndex{};
};

SplitShapes splitShapes(IPluginV3* plugin, TestExprBuilder& builder, IDimensionExpr const* batch,
    IDimensionExpr const* width, IDimensionExpr const* channels)
{
    DimsExprs in[4] = {dims({batch, width, channels}), dims({batch, width}), dims({batch, width}), dims({batch, width})};
    DimsExprs out[3]{};
    SplitShapes s;
    s.ok = build(plugin)->getOutputShapes(in, 4, nullptr, 0, out, 3, builder) == 0;
    s.keptTokens = out[0];
    s.keptIndex = out[1];
    s.ok = s.ok && out[2].nbDims == 0 && out[0].nbDims == 3 && out[1].nbDims == 2;
    return s;
}

//! split -> split -> reconstruct as the exported graphs chain them, grid of `gridTokens`.
void checkChain(std::string const& label, IPluginV3* first, IPluginV3* second, IPluginV3* reconstruct,
    int64_t gridTokens, bool dynamicBatch)
{
    TestExprBuilder builder;
    IDimensionExpr const* batch = dynamicBatch ? builder.rules.runtimeDim() : builder.rules.constant(2);
    IDimensionExpr const* n0 = builder.rules.constant(gridTokens);
    IDimensionExpr const* c = builder.rules.constant(768);
    SplitShapes const s1 = splitShapes(first, builder, batch, n0, c);
    expect(s1.ok, label + ": first split's shapes");
    if (!s1.ok)
    {
        return;
    }
    expect(stateOf(*s1.keptTokens.d[1]).sizeTensor && s1.keptTokens.d[0] == batch && s1.keptTokens.d[2] == c
            && s1.keptIndex.d[1] == s1.keptTokens.d[1],
        label + ": kept_tokens [B, M1, C], kept_index [B, M1] with M1 the size tensor");
    SplitShapes const s2 = splitShapes(second, builder, batch, s1.keptTokens.d[1], c);
    expect(s2.ok, label + ": second split's shapes (its N is the first split's size tensor)");
    expect(builder.rules.violations.empty(),
        label + ": no IExprBuilder rule broken"
            + (builder.rules.violations.empty() ? std::string() : " (" + builder.rules.violations[0] + ")"));
    bool boundsOk = builder.rules.declared.size() == 2;
    for (Declared const& d : builder.rules.declared)
    {
        boundsOk = boundsOk && d.outputIndex == dtp::TokenSplitPlugin::kKEPT_COUNT_IDX && d.upper.constant
            && d.upper.value >= gridTokens && d.opt.constant && d.opt.value >= 1 && d.opt.value <= d.upper.value;
    }
    expect(boundsOk, label + ": both size tensors at output 2 with a constant upper bound >= the grid ("
            + std::to_string(gridTokens) + ") and a constant opt inside it");
    if (!s2.ok)
    {
        return;
    }
    IDimensionExpr const* k = builder.rules.constant(150);
    DimsExprs in[3] = {dims({batch, n0, k}), dims({batch, s2.keptTokens.d[1], k}), dims({batch, s2.keptTokens.d[1]})};
    DimsExprs out[1]{};
    bool const ok = build(reconstruct)->getOutputShapes(in, 3, nullptr, 0, out, 1, builder) == 0;
    expect(ok && out[0].nbDims == 3 && out[0].d[0] == batch && out[0].d[1] == n0 && out[0].d[2] == k,
        label + ": reconstruct gives base's [B, N, K], free of size tensors");

    // Workspace: TensorRT gives -1 for the max of a data-dependent dimension.
    DynamicPluginTensorDesc io[7]{};
    for (auto& d : io)
    {
        d.desc.format = TensorFormat::kLINEAR;
        d.max.nbDims = 3;
        d.max.d[0] = 8;
        d.max.d[1] = -1;
        d.max.d[2] = 768;
    }
    size_t const bytes = build(second)->getWorkspaceSize(io, 4, io + 4, 3);
    expect(bytes >= dtp::tokenSplitWorkspaceSize(8, static_cast<int32_t>(gridTokens), 0),
        label + ": second split's workspace bound from the grid, not the data-dependent input (" + std::to_string(bytes)
            + " bytes)");
}

// --- Format and type rules ---------------------------------------------------------------------

int32_t nbTypes()
{
    return EnumMax<DataType>();
}

int32_t nbFormats()
{
    return EnumMax<TensorFormat>();
}

//! The op contract's types (plugins/*/README.md), independent of the plugin code.
bool splitAccepts(int32_t pos, DataType type, DataType tokens)
{
    switch (pos)
    {
    case 0: return type == DataType::kFLOAT || type == DataType::kHALF;
    case 1: return type == DataType::kFLOAT;
    case 2:
    case 3:
    case 5: return type == DataType::kINT32;
    case 4: return type == tokens;
    case 6: return type == DataType::kINT64;
    default: return false;
    }
}

bool reconstructAccepts(int32_t pos, DataType type, DataType base)
{
    switch (pos)
    {
    case 0: return type == DataType::kFLOAT || type == DataType::kHALF;
    case 1:
    case 3: return type == base;
    case 2: return type == DataType::kINT32;
    default: return false;
    }
}

//! TensorRT asks about position `pos` with inOut[0..pos-1] already chosen and later positions
//! undefined (here: garbage, so a plugin reading them is caught).
template <typename Accepts>
void checkFormats(std::string const& label, IPluginV3* plugin, int32_t nbInputs, int32_t nbOutputs, Accepts accepts)
{
    int32_t const total = nbInputs + nbOutputs;
    int32_t wrong = 0;
    int32_t calls = 0;
    for (int32_t pos = 0; pos < total; ++pos)
    {
        for (int32_t first = 0; first < nbTypes(); ++first)
        {
            if (pos > 0 && !accepts(0, static_cast<DataType>(first), static_cast<DataType>(first)))
            {
                continue; // TensorRT never fixes position 0 to a type the plugin refused
            }
            for (int32_t t = 0; t < nbTypes(); ++t)
            {
                for (int32_t f = 0; f < nbFormats(); ++f)
                {
                    std::vector<DynamicPluginTensorDesc> io(static_cast<size_t>(total));
                    for (int32_t i = 0; i < total; ++i)
                    {
                        io[i].desc.format = i < pos ? TensorFormat::kLINEAR : TensorFormat::kCHW32;
                        io[i].desc.type = DataType::kBOOL;
                    }
                    DataType const tokens = static_cast<DataType>(pos == 0 ? t : first);
                    for (int32_t i = 0; i < pos; ++i)
                    {
                        // An accepted type for each earlier position.
                        for (int32_t c = 0; c < nbTypes(); ++c)
                        {
                            if (i == 0 ? c == first : accepts(i, static_cast<DataType>(c), tokens))
                            {
                                io[i].desc.type = static_cast<DataType>(c);
                                break;
                            }
                        }
                    }
                    io[pos].desc.type = static_cast<DataType>(t);
                    io[pos].desc.format = static_cast<TensorFormat>(f);
                    bool const want = f == static_cast<int32_t>(TensorFormat::kLINEAR)
                        && accepts(pos, static_cast<DataType>(t), tokens);
                    bool const got = build(plugin)->supportsFormatCombination(pos, io.data(), nbInputs, nbOutputs);
                    wrong += got != want ? 1 : 0;
                    ++calls;
                    if (got != want && wrong <= 3)
                    {
                        std::printf("     pos %d type %d format %d (position 0: type %d): got %d, want %d\n", pos, t, f,
                            first, got, want);
                    }
                }
            }
        }
    }
    expect(wrong == 0,
        label + ": supportsFormatCombination over " + std::to_string(calls) + " type/format combinations");
}

void checkOutputTypes()
{
    auto split = createFromNode(splitNode(0.9F, 5, 150, 1024));
    auto rec = createFromNode(reconstructNode());
    int32_t wrong = 0;
    for (int32_t t = 0; t < nbTypes(); ++t)
    {
        DataType const type = static_cast<DataType>(t);
        bool const valid = type == DataType::kFLOAT || type == DataType::kHALF;
        DataType in[4] = {type, DataType::kFLOAT, DataType::kINT32, DataType::kINT32};
        DataType out[3] = {DataType::kBOOL, DataType::kBOOL, DataType::kBOOL};
        int32_t const status = build(split.get())->getOutputDataTypes(out, 3, in, 4);
        wrong += (status == 0) != valid ? 1 : 0;
        if (valid)
        {
            wrong += (out[0] == type && out[1] == DataType::kINT32 && out[2] == DataType::kINT64) ? 0 : 1;
        }
        DataType rin[3] = {type, type, DataType::kINT32};
        DataType rout[1] = {DataType::kBOOL};
        int32_t const rstatus = build(rec.get())->getOutputDataTypes(rout, 1, rin, 3);
        wrong += (rstatus == 0) != valid || (valid && rout[0] != type) ? 1 : 0;
    }
    expect(wrong == 0, "getOutputDataTypes: float/half tokens give (tokens, int32, int64) and (base); others refused");
}

// --- Fields, serialisation, clone --------------------------------------------------------------

std::map<std::string, std::string> serialised(IPluginV3* plugin)
{
    std::map<std::string, std::string> values;
    auto* runtime = capability<IPluginV3OneRuntime>(plugin, PluginCapabilityType::kRUNTIME);
    PluginFieldCollection const* fc = runtime->getFieldsToSerialize();
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        char text[64];
        if (f.type == PluginFieldType::kFLOAT32 && f.length == 1)
        {
            std::snprintf(text, sizeof text, "%a", static_cast<double>(*static_cast<float const*>(f.data)));
        }
        else if (f.type == PluginFieldType::kINT32 && f.length == 1)
        {
            std::snprintf(text, sizeof text, "%d", *static_cast<int32_t const*>(f.data));
        }
        else
        {
            std::snprintf(text, sizeof text, "type %d length %d", static_cast<int32_t>(f.type), f.length);
        }
        values[f.name] = text;
    }
    return values;
}

//! What the node's numeric attributes say the plugin holds (missing ones: the creator's 0).
std::map<std::string, std::string> expectedFields(Node const& node)
{
    std::map<std::string, std::string> values;
    IPluginCreatorV3One* c = creator(node.opType.c_str());
    PluginFieldCollection const* names = c->getFieldNames();
    for (int32_t i = 0; i < names->nbFields; ++i)
    {
        auto const it = node.attributes.find(names->fields[i].name);
        char text[64];
        if (it == node.attributes.end())
        {
            std::snprintf(text, sizeof text, "0");
        }
        else if (it->second.type == "FLOAT")
        {
            std::snprintf(text, sizeof text, "%a", static_cast<double>(std::strtof(it->second.value.c_str(), nullptr)));
        }
        else
        {
            std::snprintf(text, sizeof text, "%s", it->second.value.c_str());
        }
        values[names->fields[i].name] = text;
    }
    return values;
}

void checkFieldsRoundTrip(std::string const& label, Node const& node)
{
    auto plugin = createFromNode(node);
    expect(plugin != nullptr, label + ": created from parser-built fields");
    if (!plugin)
    {
        return;
    }
    auto const want = expectedFields(node);
    expect(serialised(plugin.get()) == want, label + ": serialises the node's attribute values");

    // Clone, then destroy the original: the clone must own its fields.
    std::unique_ptr<IPluginV3> copy(plugin->clone());
    plugin.reset();
    expect(copy != nullptr && serialised(copy.get()) == want, label + ": clone keeps the fields after the original is gone");
    std::unique_ptr<IPluginV3> attached(
        capability<IPluginV3OneRuntime>(copy.get(), PluginCapabilityType::kRUNTIME)->attachToContext(nullptr));
    expect(attached != nullptr && serialised(attached.get()) == want, label + ": attachToContext gives an equal plugin");

    // Round trip: the runtime phase recreates the plugin from what the engine stored.
    auto* runtime = capability<IPluginV3OneRuntime>(copy.get(), PluginCapabilityType::kRUNTIME);
    IPluginCreatorV3One* c = creator(node.opType.c_str());
    std::unique_ptr<IPluginV3> restored(
        c->createPlugin(node.name.c_str(), runtime->getFieldsToSerialize(), TensorRTPhase::kRUNTIME));
    expect(restored != nullptr && serialised(restored.get()) == want, label + ": serialisation round trip");
    auto* core = capability<IPluginV3OneCore>(restored.get(), PluginCapabilityType::kCORE);
    expect(core != nullptr && node.opType == core->getPluginName() && std::string("dtp") == core->getPluginNamespace()
            && std::string("1") == core->getPluginVersion(),
        label + ": name, namespace dtp, version 1");
}

// --- The built-in cases --------------------------------------------------------------------------

void builtInCases()
{
    IPluginCreatorV3One* split = creator("TokenSplit");
    IPluginCreatorV3One* rec = creator("TokenReconstruct");
    expect(split != nullptr && rec != nullptr, "getCreators lists TokenSplit and TokenReconstruct (V3One)");
    if (split == nullptr || rec == nullptr)
    {
        std::exit(1);
    }
    // The parser looks up exactly the declared fields: the bound must be one of them.
    PluginFieldCollection const* names = split->getFieldNames();
    bool hasBound = false;
    for (int32_t i = 0; i < names->nbFields; ++i)
    {
        hasBound = hasBound
            || (std::strcmp(names->fields[i].name, "max_tokens") == 0 && names->fields[i].type == PluginFieldType::kINT32);
        expect(std::strcmp(names->fields[i].name, "plugin_version") != 0
                && std::strcmp(names->fields[i].name, "plugin_namespace") != 0,
            std::string("declared field '") + names->fields[i].name + "' is not a parser lookup attribute");
    }
    expect(hasBound, "TokenSplit declares max_tokens (INT -> kINT32) for the ONNX parser");

    int32_t const grid = 32 * 32;
    auto first = createFromNode(splitNode(0.9F, 5, 150, grid));
    auto second = createFromNode(splitNode(0.9F, 5, 150, grid));
    auto reconstruct = createFromNode(reconstructNode());
    expect(first && second && reconstruct, "plugins from parser-built fields");
    if (!first || !second || !reconstruct)
    {
        std::exit(1);
    }
    checkChain("chain, batch 2", first.get(), second.get(), reconstruct.get(), grid, false);
    checkChain("chain, dynamic batch", first.get(), second.get(), reconstruct.get(), grid, true);

    // A graph without the bound (older exports, or --dynamic-shape): the first split may use its
    // input width, the second must refuse cleanly instead of breaking TensorRT's rule.
    auto unbounded = createFromNode(splitNode(0.9F, 5, 150, -1));
    expect(unbounded != nullptr, "TokenSplit without max_tokens is created (the parser skips missing attributes)");
    {
        TestExprBuilder builder;
        IDimensionExpr const* batch = builder.rules.constant(1);
        IDimensionExpr const* c = builder.rules.constant(64);
        SplitShapes const s1 = splitShapes(unbounded.get(), builder, batch, builder.rules.runtimeDim(), c);
        expect(s1.ok && builder.rules.violations.empty(), "unbounded first split: bound from its (runtime) input width");
        SplitShapes const s2 = splitShapes(unbounded.get(), builder, batch, s1.keptTokens.d[1], c);
        expect(!s2.ok && builder.rules.violations.empty(),
            "unbounded second split: refused with an error, no size-tensor bound handed to TensorRT");
        DynamicPluginTensorDesc io[7]{};
        io[0].max.nbDims = 3;
        io[0].max.d[0] = 1;
        io[0].max.d[1] = -1;
        io[0].max.d[2] = 64;
        expect(build(unbounded.get())->getWorkspaceSize(io, 4, io + 4, 3) == 0,
            "unbounded split with a data-dependent max width: workspace refused (logged), not a garbage size");
    }
    {
        TestExprBuilder builder;
        builder.rules.refuseOperations = true;
        IDimensionExpr const* one = builder.rules.constant(1);
        SplitShapes const s = splitShapes(first.get(), builder, one, builder.rules.constant(grid), one);
        expect(!s.ok, "a refused opt expression (nullptr) fails getOutputShapes instead of crashing");
    }
    {
        TestExprBuilder builder;
        IDimensionExpr const* one = builder.rules.constant(1);
        SplitShapes const s = splitShapes(first.get(), builder, one, builder.rules.constant(grid + 1), one);
        expect(!s.ok, "an input wider than max_tokens is refused at build time");
    }

    checkFormats("TokenSplit", first.get(), 4, 3, splitAccepts);
    checkFormats("TokenReconstruct", reconstruct.get(), 3, 1, reconstructAccepts);
    checkOutputTypes();
    checkFieldsRoundTrip("TokenSplit", splitNode(0.95F, 5, 150, grid));
    checkFieldsRoundTrip("TokenSplit without max_tokens", splitNode(0.5F, 0, 0, -1));
    checkFieldsRoundTrip("TokenReconstruct", reconstructNode());

    // Fields other producers may pass: the parser strings are tolerated, unknown names refused.
    Node typo = splitNode(0.9F, 5, 150, grid);
    float const value = 0.9F;
    PluginField fields[] = {{"threshold", &value, PluginFieldType::kFLOAT32, 1}, {"tresh", &value, PluginFieldType::kFLOAT32, 1}};
    PluginFieldCollection fc{2, fields};
    std::unique_ptr<IPluginV3> refused(split->createPlugin("typo", &fc, TensorRTPhase::kBUILD));
    expect(refused == nullptr, "unknown field refused");
    Node noThreshold = splitNode(0.9F, 5, 150, grid);
    noThreshold.attributes.erase("threshold");
    expect(createFromNode(noThreshold) == nullptr, "missing threshold refused");
    Node negative = splitNode(0.9F, -1, 150, grid);
    expect(createFromNode(negative) == nullptr, "negative context_topk refused");
}

// --- Nodes of an exported graph ----------------------------------------------------------------

void graphCases(char const* path)
{
    std::ifstream file(path);
    expect(static_cast<bool>(file), std::string("read ") + path);
    std::vector<Node> nodes;
    int64_t gridH = 0;
    int64_t gridW = 0;
    std::string line;
    while (std::getline(file, line))
    {
        std::istringstream in(line);
        std::string kind;
        in >> kind;
        if (kind == "grid")
        {
            in >> gridH >> gridW;
        }
        else if (kind == "node")
        {
            Node n;
            in >> n.opType >> n.name;
            nodes.push_back(n);
        }
        else if (kind == "attr" && !nodes.empty())
        {
            std::string name;
            Attribute a;
            in >> name >> a.type >> a.value;
            nodes.back().attributes[name] = a;
        }
    }
    std::vector<std::unique_ptr<IPluginV3>> splits;
    std::unique_ptr<IPluginV3> reconstruct;
    for (Node const& node : nodes)
    {
        auto plugin = createFromNode(node);
        expect(plugin != nullptr, "exported node " + node.name + " (" + node.opType + ") becomes a plugin");
        checkFieldsRoundTrip("exported " + node.name, node);
        if (node.opType == "TokenSplit")
        {
            splits.push_back(std::move(plugin));
        }
        else if (!reconstruct)
        {
            reconstruct = std::move(plugin);
        }
    }
    expect(gridH > 0 && gridW > 0 && splits.size() >= 2 && reconstruct != nullptr,
        "the exported graph has a grid, two splits and a reconstruct");
    if (splits.size() >= 2 && reconstruct && splits[0] && splits[1])
    {
        checkChain("exported chain", splits[0].get(), splits[1].get(), reconstruct.get(), gridH * gridW, true);
    }
}

} // namespace

int main(int argc, char** argv)
{
    builtInCases();
    if (argc == 3 && std::string(argv[1]) == "--graph")
    {
        graphCases(argv[2]);
    }
    else if (argc != 1)
    {
        std::fprintf(stderr, "usage: %s [--graph nodes.txt]\n", argv[0]);
        return 2;
    }
    std::printf("%d check(s) failed\n", gFailures);
    return gFailures == 0 ? 0 : 1;
}
