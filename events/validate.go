package events

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

//go:embed schemas/*.json
var schemaFiles embed.FS

// Schema returns the JSON Schema document of an event type.
func Schema(eventType string) ([]byte, error) {
	return schemaFiles.ReadFile("schemas/" + eventType + ".json")
}

// Validator checks event data against the schema of its type. Build it once per process.
type Validator struct {
	schemas  map[string]*jsonschema.Schema
	optional map[string]bool
	printer  *message.Printer
}

// NewValidator compiles the schema of every event type in the catalog.
func NewValidator() (*Validator, error) {
	c := jsonschema.NewCompiler()
	entries, err := schemaFiles.ReadDir("schemas")
	if err != nil {
		return nil, fmt.Errorf("read embedded schemas: %w", err)
	}
	for _, e := range entries {
		b, err := schemaFiles.ReadFile(path.Join("schemas", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read schema %s: %w", e.Name(), err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("parse schema %s: %w", e.Name(), err)
		}
		if err := c.AddResource(schemaBase+e.Name(), doc); err != nil {
			return nil, fmt.Errorf("add schema %s: %w", e.Name(), err)
		}
	}
	v := &Validator{schemas: map[string]*jsonschema.Schema{}, printer: message.NewPrinter(language.English), optional: map[string]bool{}}
	for _, t := range Catalog() {
		s, err := c.Compile(SchemaURL(t.Name))
		if err != nil {
			return nil, fmt.Errorf("compile schema of %s: %w", t.Name, err)
		}
		v.schemas[t.Name] = s
		v.optional[t.Name] = t.DataOptional
	}
	return v, nil
}

// Validate checks the event's data against its type's schema. The error names the field,
// as a JSON pointer into the data.
func (v *Validator) Validate(e cloudevents.Event) error {
	s, ok := v.schemas[e.Type()]
	if !ok {
		return fmt.Errorf("event type %q is not in the podguard catalog", e.Type())
	}
	ct := e.DataContentType()
	if ct != "" && ct != cloudevents.ApplicationJSON && !strings.HasPrefix(ct, "application/json;") && !strings.HasSuffix(strings.SplitN(ct, ";", 2)[0], "+json") {
		return fmt.Errorf("datacontenttype %q: data must be JSON (application/json)", ct)
	}
	if len(e.Data()) == 0 {
		if v.optional[e.Type()] {
			return nil
		}
		return errors.New("data: missing; this event type needs a JSON object")
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(e.Data()))
	if err != nil {
		return fmt.Errorf("data: not valid JSON: %v", err)
	}
	if err := s.Validate(doc); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return fmt.Errorf("data does not match the schema of %s: %s", e.Type(), describe(ve, v.printer))
		}
		return fmt.Errorf("data does not match the schema of %s: %v", e.Type(), err)
	}
	return nil
}

// describe flattens a validation error into "/field: reason" lines, deepest causes only.
func describe(ve *jsonschema.ValidationError, printer *message.Printer) string {
	var leaves []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			loc := "/" + strings.Join(e.InstanceLocation, "/")
			leaves = append(leaves, fmt.Sprintf("%s: %s", loc, e.ErrorKind.LocalizedString(printer)))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	return strings.Join(leaves, "; ")
}

// MaxCallerLength bounds the caller an operation records (ExtCaller), in bytes: more than
// a Kubernetes user name needs (a service account's, system:serviceaccount:<namespace>:<name>,
// is at most 339).
const MaxCallerLength = 512

// CheckCaller reports what is wrong with the value of ExtCaller: it must be a non-empty,
// printable UTF-8 string of at most MaxCallerLength bytes.
func CheckCaller(caller string) error {
	switch {
	case caller == "":
		return errors.New("is empty")
	case len(caller) > MaxCallerLength:
		return fmt.Errorf("is %d bytes long, more than %d", len(caller), MaxCallerLength)
	case !utf8.ValidString(caller):
		return errors.New("is not UTF-8")
	}
	for i, r := range caller {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("has the unprintable character %U at byte %d", r, i)
		}
	}
	return nil
}
