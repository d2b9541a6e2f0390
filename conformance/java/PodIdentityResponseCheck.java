/*
 * Checks a credentials-endpoint answer against the parsing rules of Huawei's Java SDK
 * (com.huaweicloud.sdk:huaweicloud-sdk-core ≥ 3.1.191, PodIdentityAccessor), with the JDK only.
 *
 * Maven Central as reachable from the test machines does not serve the Java SDK (3.1.219 was refused
 * on 2026-12-02; 3.1.191, 3.1.200 and 3.1.212 before), so its rules, read in its public source, are
 * re-implemented here (our code, not Huawei's):
 *
 *  - the body is read with Jackson ignoring unknown properties into a class whose only field is
 *    `credentials`: the wrapper is required (a bare or `credential` object leaves it null and the
 *    SDK fails with "credential is null");
 *  - inside it, `access|accessKeyId`, `secret|secretAccessKey`, `securitytoken|securityToken` and
 *    `expires_at|expiration` are read as strings (the SDK's strict string deserializer);
 *  - the expiry is parsed by `value.replace("000Z", "Z")` then `SimpleDateFormat
 *    ("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'", Locale.US)` in the JVM's default time zone. Consequences:
 *    exactly three fractional digits are needed (six are misread as milliseconds: 02.123456Z is
 *    read as 02 + 123.456 s), milliseconds of `000` cannot be parsed at all (".000Z" becomes
 *    ".Z"), and a JVM whose default zone is not UTC reads the expiry shifted by its offset.
 *
 * Usage: java PodIdentityResponseCheck.java [--min-validity-seconds N] < body.json
 * Prints one JSON line {"ok":true,"accessKeyId":...,"expiresAtMillis":...} or
 * {"ok":false,"error":...}; exits 0 or 1. Never prints the secret key or the token.
 * `java PodIdentityResponseCheck.java --self-test` checks the checker on known good and bad bodies.
 */

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.text.ParseException;
import java.text.SimpleDateFormat;
import java.time.Instant;
import java.time.format.DateTimeParseException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TimeZone;
import java.util.regex.Pattern;

public final class PodIdentityResponseCheck {
    private static final Pattern THREE_DIGITS =
            Pattern.compile("\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{3}Z");

    /** A refusal, with a message that never quotes a credential value. */
    static final class Refused extends Exception {
        Refused(String message) {
            super(message);
        }
    }

    /** What the SDK would hold after reading the body. */
    record Parsed(String accessKeyId, long expiresAtMillis) {
    }

    public static void main(String[] args) throws IOException {
        if (args.length == 1 && args[0].equals("--self-test")) {
            System.exit(selfTest());
        }
        long minValidity = 0;
        if (args.length == 2 && args[0].equals("--min-validity-seconds")) {
            minValidity = Long.parseLong(args[1]);
        } else if (args.length != 0) {
            System.err.println("usage: PodIdentityResponseCheck [--min-validity-seconds N] < body.json");
            System.exit(2);
        }
        String body = new String(System.in.readAllBytes(), StandardCharsets.UTF_8);
        try {
            Parsed p = check(body, System.currentTimeMillis(), minValidity);
            System.out.println("{\"ok\":true,\"accessKeyId\":" + quote(p.accessKeyId())
                    + ",\"expiresAtMillis\":" + p.expiresAtMillis() + "}");
        } catch (Refused e) {
            System.out.println("{\"ok\":false,\"error\":" + quote(e.getMessage()) + "}");
            System.exit(1);
        }
    }

    /** The SDK's reading of `body`, refused where the SDK would fail or misread it. */
    static Parsed check(String body, long nowMillis, long minValiditySeconds) throws Refused {
        Object root = new Json(body).document();
        if (!(root instanceof Map<?, ?> top)) {
            throw new Refused("the body is not a JSON object");
        }
        if (!(top.get("credentials") instanceof Map<?, ?> c)) {
            throw new Refused("no \"credentials\" object (the Java SDK reads only that wrapper)");
        }
        String ak = field(c, "access", "accessKeyId");
        field(c, "secret", "secretAccessKey");
        field(c, "securitytoken", "securityToken");
        String expiration = field(c, "expires_at", "expiration");
        long sdk = sdkExpiry(expiration);
        long truth;
        try {
            truth = Instant.parse(expiration).toEpochMilli();
        } catch (DateTimeParseException e) {
            throw new Refused("expiration is not an RFC 3339 instant");
        }
        if (!THREE_DIGITS.matcher(expiration).matches()) {
            throw new Refused("expiration needs exactly three fractional digits and Z");
        }
        if (sdk != truth) {
            throw new Refused("the Java SDK reads expiration " + sdk + " ms, the instant is " + truth + " ms");
        }
        if (truth - nowMillis < minValiditySeconds * 1000) {
            throw new Refused("less than " + minValiditySeconds + " s of validity left");
        }
        return new Parsed(ak, sdk);
    }

    /** The value of the first alias present; it must be a non-empty string. */
    private static String field(Map<?, ?> c, String... aliases) throws Refused {
        for (String name : aliases) {
            if (c.containsKey(name)) {
                if (!(c.get(name) instanceof String s) || s.isEmpty()) {
                    throw new Refused(name + " must be a non-empty JSON string");
                }
                return s;
            }
        }
        throw new Refused("no " + String.join(" or ", aliases));
    }

    /** The SDK's expiry rule, in UTC (the zone in which it reads an instant correctly). */
    static long sdkExpiry(String value) throws Refused {
        SimpleDateFormat format = new SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'", Locale.US);
        format.setTimeZone(TimeZone.getTimeZone("UTC"));
        try {
            return format.parse(value.replace("000Z", "Z")).getTime();
        } catch (ParseException e) {
            throw new Refused("the Java SDK cannot parse expiration (e.g. milliseconds of 000)");
        }
    }

    private static int selfTest() {
        long now = Instant.parse("2026-11-24T12:00:00Z").toEpochMilli();
        String good = "{\"credentials\":{\"accessKeyId\":\"AK\",\"secretAccessKey\":\"SK\","
                + "\"securityToken\":\"T\",\"expiration\":\"2026-11-24T13:21:02.123Z\"},\"subject\":{}}";
        String[][] bad = {
            {"bare object", "{\"accessKeyId\":\"AK\",\"secretAccessKey\":\"SK\",\"securityToken\":\"T\","
                + "\"expiration\":\"2026-11-24T13:21:02.123Z\"}"},
            {"ms of 000", good.replace("02.123Z", "02.000Z")},
            {"six digits", good.replace("02.123Z", "02.123456Z")},
            {"no fraction", good.replace("02.123Z", "02Z")},
            {"offset", good.replace("02.123Z", "02.123+00:00")},
            {"number", good.replace("\"T\"", "7")},
            {"missing secret", good.replace("\"secretAccessKey\":\"SK\",", "")},
            {"not json", "{\"credentials\":"},
        };
        List<String> failures = new ArrayList<>();
        try {
            Parsed p = check(good, now, 40 * 60);
            if (p.expiresAtMillis() != Instant.parse("2026-11-24T13:21:02.123Z").toEpochMilli()) {
                failures.add("good body read wrongly");
            }
            check(good.replace("accessKeyId", "access").replace("expiration", "expires_at"), now, 0);
        } catch (Refused e) {
            failures.add("good body refused: " + e.getMessage());
        }
        for (String[] c : bad) {
            try {
                check(c[1], now, 0);
                failures.add(c[0] + " accepted");
            } catch (Refused expected) {
                // refused, as the SDK would fail or misread it
            }
        }
        try {
            check(good, now, 2 * 60 * 60);
            failures.add("short validity accepted");
        } catch (Refused expected) {
            // refused
        }
        System.out.println(failures.isEmpty() ? "{\"ok\":true}" : "{\"ok\":false,\"error\":" + quote(failures.toString()) + "}");
        return failures.isEmpty() ? 0 : 1;
    }

    private static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            if (ch == '"' || ch == '\\') {
                b.append('\\').append(ch);
            } else if (ch < 0x20) {
                b.append(String.format("\\u%04x", (int) ch));
            } else {
                b.append(ch);
            }
        }
        return b.append('"').toString();
    }

    /** A small strict JSON reader: objects, arrays, strings, numbers, true/false/null. */
    static final class Json {
        private final String s;
        private int i;

        Json(String s) {
            this.s = s;
        }

        Object document() throws Refused {
            Object v = value(0);
            skip();
            if (i != s.length()) {
                throw new Refused("trailing data after the JSON document");
            }
            return v;
        }

        private void skip() {
            while (i < s.length() && " \t\r\n".indexOf(s.charAt(i)) >= 0) {
                i++;
            }
        }

        private Object value(int depth) throws Refused {
            if (depth > 64) {
                throw new Refused("JSON nested too deeply");
            }
            skip();
            if (i >= s.length()) {
                throw new Refused("truncated JSON");
            }
            char c = s.charAt(i);
            if (c == '{') {
                return object(depth);
            } else if (c == '[') {
                return array(depth);
            } else if (c == '"') {
                return string();
            } else if (s.startsWith("true", i) || s.startsWith("null", i)) {
                i += 4;
                return c == 't' ? Boolean.TRUE : null;
            } else if (s.startsWith("false", i)) {
                i += 5;
                return Boolean.FALSE;
            }
            int start = i;
            while (i < s.length() && "+-.eE0123456789".indexOf(s.charAt(i)) >= 0) {
                i++;
            }
            if (start == i) {
                throw new Refused("invalid JSON at offset " + i);
            }
            return Double.valueOf(s.substring(start, i));
        }

        private Map<String, Object> object(int depth) throws Refused {
            Map<String, Object> m = new LinkedHashMap<>();
            i++;
            skip();
            if (i < s.length() && s.charAt(i) == '}') {
                i++;
                return m;
            }
            while (true) {
                skip();
                if (i >= s.length() || s.charAt(i) != '"') {
                    throw new Refused("expected a key at offset " + i);
                }
                String k = string();
                expect(':');
                m.put(k, value(depth + 1));
                skip();
                if (i < s.length() && s.charAt(i) == ',') {
                    i++;
                    continue;
                }
                expect('}');
                return m;
            }
        }

        private List<Object> array(int depth) throws Refused {
            List<Object> l = new ArrayList<>();
            i++;
            skip();
            if (i < s.length() && s.charAt(i) == ']') {
                i++;
                return l;
            }
            while (true) {
                l.add(value(depth + 1));
                skip();
                if (i < s.length() && s.charAt(i) == ',') {
                    i++;
                    continue;
                }
                expect(']');
                return l;
            }
        }

        private void expect(char c) throws Refused {
            skip();
            if (i >= s.length() || s.charAt(i) != c) {
                throw new Refused("expected '" + c + "' at offset " + i);
            }
            i++;
        }

        private String string() throws Refused {
            StringBuilder b = new StringBuilder();
            i++;
            while (i < s.length()) {
                char c = s.charAt(i++);
                if (c == '"') {
                    return b.toString();
                }
                if (c != '\\') {
                    b.append(c);
                    continue;
                }
                if (i >= s.length()) {
                    break;
                }
                char e = s.charAt(i++);
                switch (e) {
                    case 'n' -> b.append('\n');
                    case 't' -> b.append('\t');
                    case 'r' -> b.append('\r');
                    case 'b' -> b.append('\b');
                    case 'f' -> b.append('\f');
                    case 'u' -> {
                        if (i + 4 > s.length()) {
                            throw new Refused("truncated \\u escape");
                        }
                        try {
                            b.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
                        } catch (NumberFormatException ex) {
                            throw new Refused("bad \\u escape");
                        }
                        i += 4;
                    }
                    default -> b.append(e);
                }
            }
            throw new Refused("unterminated string");
        }
    }
}
