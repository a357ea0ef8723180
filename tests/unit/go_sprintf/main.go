// Reference outputs of Go's fmt.Sprintf with string arguments, for tests/unit/test_events.py.
// Regenerate: go run tests/unit/go_sprintf/main.go > tests/unit/go_sprintf_cases.json
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
)

type c struct {
	Format string   `json:"format"`
	Args   []string `json:"args"`
}

type out struct {
	Format string   `json:"format"`
	Args   []string `json:"args"`
	Go     string   `json:"go,omitempty"`
	Prefix string   `json:"go_prefix,omitempty"`
	Len    int      `json:"go_len"`
}

func main() {
	s := []string{"ab"}
	cases := []c{
		{"%s", s}, {"%v", s}, {"%q", s}, {"%x", s}, {"%X", s}, {"%T", s}, {"%p", s}, {"%d", s},
		{"%w", s}, {"%#w", s}, {"%#v", s}, {"%+q", []string{"héllo\x01"}}, {"%#q", []string{"a`b"}},
		{"%#q", []string{"tab\there"}}, {"%q", []string{"\u00a0\u2028\U0001F600\x7f"}},
		{"%5s|%-5s|%05s|%-05s", []string{"a", "b", "c", "d"}}, {"%.1s|%.0s|%.s|%5.1s", []string{"héllo", "x", "y", "zz"}},
		{"%8q|%-8q|%.2q", []string{"a", "b", "xyz"}},
		{"% x|%#x|% #X|%.1x|%6x|%-6x|%06x", []string{"ab", "ab", "ab", "ab", "a", "a", "a"}},
		{"%x|%5x|%05x|%-5x|", []string{"", "", "", ""}},
		{"%5d|%-5d|%.1d", []string{"ab", "ab", "ab"}}, {"%z %!", []string{"a"}},
		{"%*s", []string{"5", "x"}}, {"%*s", nil}, {"%.*s", []string{"2", "xyz"}}, {"%-*s|", []string{"a", "b"}},
		{"%*.*s", []string{"1", "2", "3"}},
		{"%[2]s %[1]s", []string{"a", "b"}}, {"%[3]s", []string{"a"}}, {"%[0]s", []string{"a"}}, {"%[x]s", s},
		{"%[1]s %s", []string{"a", "b"}}, {"%[2]*s", []string{"a", "b"}}, {"%[1]", s}, {"%[", s}, {"%[]s", s},
		{"%[1]5s", []string{"a"}}, {"%[1].2s", []string{"abc"}}, {"%.[1]s", []string{"abc"}},
		{"%", nil}, {"abc%", nil}, {"%-", nil}, {"%5", s}, {"%5.", s}, {"%.", s}, {"%.5", s}, {"%5.x", s},
		{"%%|%5%|%-%", nil}, {"%s %s", s}, {"%s", []string{"a", "b", "c"}}, {"x", []string{"a"}},
		{"%[2]s", []string{"a", "b", "c"}},
		{"%1000000s|", s}, {"%1000001s|", s}, {"%10000009s|", s}, {"%10000010s|", s},
		{"%99999999s|", s}, {"%999999999s", s}, {"%999999999s and more %s", []string{"a", "b"}},
		{"%.1000000s|", s}, {"%.10000010s|", s}, {"%.99999999s|", s}, {"%.99999999d|", s},
		{"%[99999999]s", s}, {"%[10000009]s", s},
		{"%-9999999s|", s}, {"%09999999x|", s},
		{"%s", []string{""}}, {"%q", []string{""}}, {"%v%v", []string{"é", "€"}},
		{"%\u00e9", s}, {"%5\u20ac", s},
	}
	res := make([]out, 0, len(cases))
	for _, k := range cases {
		a := make([]any, len(k.Args))
		for i, v := range k.Args {
			a[i] = v
		}
		got := fmt.Sprintf(k.Format, a...)
		o := out{Format: k.Format, Args: k.Args, Len: len([]rune(got))}
		if len(got) <= 4096 {
			o.Go = got
		} else {
			o.Prefix = string([]rune(got)[:2048])
		}
		res = append(res, o)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any{"go_version": runtime.Version(), "cases": res}); err != nil {
		panic(err)
	}
}
