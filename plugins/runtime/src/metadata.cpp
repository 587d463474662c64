// SPDX-License-Identifier: Apache-2.0
#include "dtp/metadata.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace dtp
{
namespace json
{
namespace
{

class Parser
{
public:
    Parser(std::string const& text, std::string const& what)
        : mText(text)
        , mWhat(what)
    {
    }

    Value document()
    {
        Value value = parseValue(0);
        skipSpace();
        if (mPos != mText.size())
        {
            fail("unexpected text after the value");
        }
        return value;
    }

private:
    static constexpr int kMAX_DEPTH = 64;

    [[noreturn]] void fail(std::string const& why) const
    {
        throw Error(mWhat + ": not valid JSON at offset " + std::to_string(mPos) + " (" + why + ")");
    }

    void skipSpace()
    {
        while (mPos < mText.size() && (mText[mPos] == ' ' || mText[mPos] == '\t' || mText[mPos] == '\n' || mText[mPos] == '\r'))
        {
            ++mPos;
        }
    }

    bool consume(char const* word)
    {
        std::string const w(word);
        if (mText.compare(mPos, w.size(), w) == 0)
        {
            mPos += w.size();
            return true;
        }
        return false;
    }

    Value parseValue(int depth)
    {
        if (depth > kMAX_DEPTH)
        {
            fail("nested too deeply");
        }
        skipSpace();
        if (mPos >= mText.size())
        {
            fail("unexpected end");
        }
        Value value;
        char const c = mText[mPos];
        if (c == '{')
        {
            value.kind = Value::Kind::kOBJECT;
            ++mPos;
            skipSpace();
            if (mPos < mText.size() && mText[mPos] == '}')
            {
                ++mPos;
                return value;
            }
            while (true)
            {
                skipSpace();
                if (mPos >= mText.size() || mText[mPos] != '"')
                {
                    fail("expected a member name");
                }
                std::string key = parseString();
                skipSpace();
                if (mPos >= mText.size() || mText[mPos] != ':')
                {
                    fail("expected ':'");
                }
                ++mPos;
                value.members.emplace_back(std::move(key), parseValue(depth + 1));
                skipSpace();
                if (mPos < mText.size() && mText[mPos] == ',')
                {
                    ++mPos;
                    continue;
                }
                if (mPos < mText.size() && mText[mPos] == '}')
                {
                    ++mPos;
                    return value;
                }
                fail("expected ',' or '}'");
            }
        }
        if (c == '[')
        {
            value.kind = Value::Kind::kARRAY;
            ++mPos;
            skipSpace();
            if (mPos < mText.size() && mText[mPos] == ']')
            {
                ++mPos;
                return value;
            }
            while (true)
            {
                value.items.push_back(parseValue(depth + 1));
                skipSpace();
                if (mPos < mText.size() && mText[mPos] == ',')
                {
                    ++mPos;
                    continue;
                }
                if (mPos < mText.size() && mText[mPos] == ']')
                {
                    ++mPos;
                    return value;
                }
                fail("expected ',' or ']'");
            }
        }
        if (c == '"')
        {
            value.kind = Value::Kind::kSTRING;
            value.text = parseString();
            return value;
        }
        if (consume("true") || consume("false"))
        {
            value.kind = Value::Kind::kBOOL;
            value.boolean = mText[mPos - 1] == 'e' && mText[mPos - 2] == 'u'; // "true", not "false"
            return value;
        }
        if (consume("null"))
        {
            return value;
        }
        // Python's json.dumps writes NaN / Infinity for non-finite floats.
        if (consume("NaN"))
        {
            value.kind = Value::Kind::kNUMBER;
            value.number = std::nan("");
            return value;
        }
        if (consume("Infinity"))
        {
            value.kind = Value::Kind::kNUMBER;
            value.number = HUGE_VAL;
            return value;
        }
        if (consume("-Infinity"))
        {
            value.kind = Value::Kind::kNUMBER;
            value.number = -HUGE_VAL;
            return value;
        }
        char const* begin = mText.c_str() + mPos;
        char* end = nullptr;
        value.number = std::strtod(begin, &end);
        if (end == begin || !(c == '-' || (c >= '0' && c <= '9')))
        {
            fail("expected a value");
        }
        value.kind = Value::Kind::kNUMBER;
        mPos += static_cast<size_t>(end - begin);
        return value;
    }

    static void appendUtf8(std::string& out, unsigned long cp)
    {
        if (cp < 0x80)
        {
            out += static_cast<char>(cp);
        }
        else if (cp < 0x800)
        {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
        else if (cp < 0x10000)
        {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
        else
        {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }

    unsigned long hex4()
    {
        if (mPos + 4 > mText.size())
        {
            fail("short \\u escape");
        }
        unsigned long cp = 0;
        for (int i = 0; i < 4; ++i)
        {
            char const h = mText[mPos++];
            cp <<= 4;
            if (h >= '0' && h <= '9')
                cp |= static_cast<unsigned long>(h - '0');
            else if (h >= 'a' && h <= 'f')
                cp |= static_cast<unsigned long>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F')
                cp |= static_cast<unsigned long>(h - 'A' + 10);
            else
                fail("bad \\u escape");
        }
        return cp;
    }

    std::string parseString()
    {
        ++mPos; // opening quote
        std::string out;
        while (true)
        {
            if (mPos >= mText.size())
            {
                fail("unterminated string");
            }
            char const c = mText[mPos++];
            if (c == '"')
            {
                return out;
            }
            if (c != '\\')
            {
                out += c;
                continue;
            }
            if (mPos >= mText.size())
            {
                fail("unterminated escape");
            }
            char const e = mText[mPos++];
            switch (e)
            {
            case '"': out += '"'; break;
            case '\\': out += '\\'; break;
            case '/': out += '/'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            case 't': out += '\t'; break;
            case 'u':
            {
                unsigned long cp = hex4();
                // A surrogate pair (json.dumps escapes non-ASCII class names this way).
                if (cp >= 0xD800 && cp < 0xDC00 && mText.compare(mPos, 2, "\\u") == 0)
                {
                    mPos += 2;
                    unsigned long const low = hex4();
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                }
                appendUtf8(out, cp);
                break;
            }
            default: fail(std::string("bad escape \\") + e);
            }
        }
    }

    std::string const& mText;
    std::string const& mWhat;
    size_t mPos{0};
};

void dumpString(std::string const& text, std::string& out)
{
    out += '"';
    for (char c : text)
    {
        if (c == '"' || c == '\\')
        {
            out += '\\';
            out += c;
        }
        else if (static_cast<unsigned char>(c) < 0x20)
        {
            char buffer[8];
            std::snprintf(buffer, sizeof(buffer), "\\u%04x", static_cast<unsigned>(c));
            out += buffer;
        }
        else
        {
            out += c;
        }
    }
    out += '"';
}

void dumpValue(Value const& value, std::string& out)
{
    switch (value.kind)
    {
    case Value::Kind::kNULL: out += "null"; return;
    case Value::Kind::kBOOL: out += value.boolean ? "true" : "false"; return;
    case Value::Kind::kNUMBER:
    {
        char buffer[32];
        std::snprintf(buffer, sizeof(buffer), "%.17g", value.number);
        out += buffer;
        return;
    }
    case Value::Kind::kSTRING: dumpString(value.text, out); return;
    case Value::Kind::kARRAY:
        out += '[';
        for (size_t i = 0; i < value.items.size(); ++i)
        {
            out += i ? ", " : "";
            dumpValue(value.items[i], out);
        }
        out += ']';
        return;
    case Value::Kind::kOBJECT:
        out += '{';
        for (size_t i = 0; i < value.members.size(); ++i)
        {
            out += i ? ", " : "";
            dumpString(value.members[i].first, out);
            out += ": ";
            dumpValue(value.members[i].second, out);
        }
        out += '}';
        return;
    }
}

} // namespace

Value const* Value::find(std::string const& key) const
{
    for (auto const& member : members)
    {
        if (member.first == key)
        {
            return &member.second;
        }
    }
    return nullptr;
}

Value parse(std::string const& text, std::string const& what)
{
    return Parser(text, what).document();
}

std::string dump(Value const& value)
{
    std::string out;
    dumpValue(value, out);
    return out;
}

} // namespace json

namespace
{

bool readFile(std::string const& path, std::string& text)
{
    std::ifstream file(path, std::ios::binary);
    if (!file)
    {
        return false;
    }
    std::ostringstream buffer;
    buffer << file.rdbuf();
    text = buffer.str();
    return true;
}

std::string withoutSuffix(std::string const& path)
{
    size_t const slash = path.find_last_of('/');
    size_t const dot = path.find_last_of('.');
    return dot != std::string::npos && (slash == std::string::npos || dot > slash) ? path.substr(0, dot) : path;
}

[[noreturn]] void badValue(std::string const& source, std::string const& key, std::string const& expected)
{
    throw Error(source + ": metadata " + key + " is not " + expected
        + "; re-export the model with dtp-export (or set Options::modelMetadata = false and pass the values)");
}

std::vector<double> numbers(json::Value const& value, size_t count, std::string const& source, std::string const& key)
{
    std::string const expected = "a list of " + std::to_string(count) + " numbers";
    if (value.kind != json::Value::Kind::kARRAY || value.items.size() != count)
    {
        badValue(source, key, expected);
    }
    std::vector<double> out;
    for (auto const& item : value.items)
    {
        if (item.kind != json::Value::Kind::kNUMBER || !std::isfinite(item.number))
        {
            badValue(source, key, expected);
        }
        out.push_back(item.number);
    }
    return out;
}

int32_t positiveInt(double v, std::string const& source, std::string const& key)
{
    if (!(v >= 1.0 && v <= 1e6) || v != std::floor(v))
    {
        badValue(source, key, "a positive integer");
    }
    return static_cast<int32_t>(v);
}

} // namespace

MetadataProps readEngineSidecar(std::string const& enginePath)
{
    for (std::string const& candidate : {enginePath + ".json", withoutSuffix(enginePath) + ".json"})
    {
        std::string text;
        if (!readFile(candidate, text))
        {
            continue;
        }
        json::Value const doc = json::parse(text, candidate);
        json::Value const* table = doc.find("metadata");
        if (table == nullptr || table->kind != json::Value::Kind::kOBJECT)
        {
            table = &doc; // a plain JSON object of dtp.* metadata
        }
        if (table->kind != json::Value::Kind::kOBJECT)
        {
            throw Error(candidate + ": expected a JSON object of dtp.* metadata");
        }
        MetadataProps props;
        for (auto const& member : table->members)
        {
            // Both forms dtp-build may write: the props text ("[3, 4, 6]") and plain JSON values.
            json::Value const& value = member.second;
            if (value.kind == json::Value::Kind::kSTRING)
            {
                try
                {
                    json::parse(value.text, candidate);
                    props[member.first] = value.text;
                    continue;
                }
                catch (Error const&)
                {
                    // a plain string such as "dtop-vit-t": stored as its JSON form below
                }
            }
            props[member.first] = json::dump(value);
        }
        return props;
    }
    return {};
}

void applyMetadata(MetadataProps const& props, std::string const& source, Options& options)
{
    auto value = [&](char const* key, json::Value& out) {
        auto it = props.find(key);
        if (it == props.end())
        {
            return false;
        }
        out = json::parse(it->second, source + ": metadata " + key);
        return true;
    };
    json::Value v;
    if (value("dtp.mean", v))
    {
        auto const m = numbers(v, 3, source, "dtp.mean");
        options.mean = {static_cast<float>(m[0]), static_cast<float>(m[1]), static_cast<float>(m[2])};
    }
    if (value("dtp.std", v))
    {
        auto const s = numbers(v, 3, source, "dtp.std");
        options.std = {static_cast<float>(s[0]), static_cast<float>(s[1]), static_cast<float>(s[2])};
    }
    if (value("dtp.patch_size", v))
    {
        if (v.kind != json::Value::Kind::kNUMBER)
        {
            badValue(source, "dtp.patch_size", "a positive integer");
        }
        options.patchSize = positiveInt(v.number, source, "dtp.patch_size");
    }
    if (value("dtp.trained_size", v))
    {
        auto const t = numbers(v, 2, source, "dtp.trained_size");
        options.trainedSize = {positiveInt(t[0], source, "dtp.trained_size"),
            positiveInt(t[1], source, "dtp.trained_size")};
    }
    if (value("dtp.class_names", v))
    {
        if (v.kind != json::Value::Kind::kARRAY)
        {
            badValue(source, "dtp.class_names", "a list of strings");
        }
        options.classNames.clear();
        for (auto const& item : v.items)
        {
            if (item.kind != json::Value::Kind::kSTRING)
            {
                badValue(source, "dtp.class_names", "a list of strings");
            }
            options.classNames.push_back(item.text);
        }
    }
}

} // namespace dtp
