// SPDX-License-Identifier: Apache-2.0
// The model's own deployment facts (dtp_deploy/metadata.py): the `dtp.*` entries of an ONNX
// model's metadata_props, or of the sidecar `<engine>.json` that dtp-build writes next to a
// TensorRT engine. Values are JSON; a tiny JSON reader parses them, so that a C++ user passes
// nothing by hand.
#ifndef DTP_RUNTIME_METADATA_H
#define DTP_RUNTIME_METADATA_H

#include "dtp/segmenter.h"

#include <map>
#include <string>
#include <vector>

namespace dtp
{

//! `dtp.<field>` -> JSON text, as in ONNX metadata_props.
using MetadataProps = std::map<std::string, std::string>;

namespace json
{

//! A parsed JSON value (the subset metadata needs: all of JSON, numbers as double).
struct Value
{
    enum class Kind
    {
        kNULL,
        kBOOL,
        kNUMBER,
        kSTRING,
        kARRAY,
        kOBJECT
    };
    Kind kind{Kind::kNULL};
    bool boolean{false};
    double number{0.0};
    std::string text;
    std::vector<Value> items;
    std::vector<std::pair<std::string, Value>> members;

    //! The member named key, or nullptr.
    Value const* find(std::string const& key) const;
};

//! Parse a whole JSON document; throws dtp::Error naming `what` and the offset on bad input.
Value parse(std::string const& text, std::string const& what);

//! Compact JSON text of a value (numbers with 17 significant digits).
std::string dump(Value const& value);

} // namespace json

//! The metadata in the sidecar of an engine: `<engine>.json` (dtp-build), else `<stem>.json`;
//! its "metadata" object (or the whole object) as props. Empty when neither file exists.
MetadataProps readEngineSidecar(std::string const& enginePath);

//! Set mean, std, patchSize, trainedSize and classNames of options from the props that carry
//! them. Throws dtp::Error naming `source`, the key and the fix when a value has the wrong form.
void applyMetadata(MetadataProps const& props, std::string const& source, Options& options);

} // namespace dtp

#endif // DTP_RUNTIME_METADATA_H
