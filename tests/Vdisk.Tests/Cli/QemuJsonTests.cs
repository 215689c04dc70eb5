using Vdisk.Cli.Output;
using Xunit;

namespace Vdisk.Tests.Cli;

public class QemuJsonTests
{
    [Fact]
    public void NestedObjectsUseFourSpaceIndents()
    {
        var o = new JsonObject { { "virtual-size", 4194304L }, { "format-specific", new JsonObject { { "type", "qcow2" }, { "data", new JsonObject { { "lazy-refcounts", false } } } } } };
        Assert.Equal("{\n    \"virtual-size\": 4194304,\n    \"format-specific\": {\n        \"type\": \"qcow2\",\n        \"data\": {\n            \"lazy-refcounts\": false\n        }\n    }\n}",
            QemuJson.Pretty(o));
    }

    [Fact]
    public void ArraysOfObjectsAreIndentedToo()
    {
        var list = new List<object> { new JsonObject { { "a", 1 } }, new JsonObject { { "b", true } } };
        Assert.Equal("[\n    {\n        \"a\": 1\n    },\n    {\n        \"b\": true\n    }\n]", QemuJson.Pretty(list));
    }

    [Fact]
    public void StringsEscapeLikeQemu()
    {
        // From qemu-img info on a file named "é<TAB>\"x.raw": upper-case \u escapes, slashes left alone.
        Assert.Equal("\"\\u00E9\\t\\\"x/y.raw\\\\\\u007F\\uD83D\\uDE00\"", QemuJson.Pretty("é\t\"x/y.raw\\\u007f😀"));
    }
}
