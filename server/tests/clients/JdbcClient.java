// pgJDBC (Debian's libpostgresql-jdbc-java) against `audiolake serve`: what DBeaver, DataGrip,
// Tableau and Spark use. Reads PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE (default audiolake)
// and PGSSLMODE, runs the checks below over `music` (tests/music) and exits 1 naming each failed
// check.
//
//     javac -d /tmp/jdbc JdbcClient.java
//     java -cp /tmp/jdbc:/usr/share/java/postgresql.jar JdbcClient

import java.sql.*;
import java.util.*;

public class JdbcClient {
    static final List<String> FILES = List.of(
            "a_minor_120.mp3", "broken.mp3", "c_major_90.flac", "d_minor_140.ogg", "g_major_100.m4a");
    static final List<String> failures = new ArrayList<>();

    interface Check {
        void run(Connection c) throws Exception;
    }

    static void check(String name, Connection c, Check check) {
        try {
            check.run(c);
            System.out.println("ok   " + name);
        } catch (Throwable e) {
            failures.add(name);
            System.out.println("FAIL " + name + ": " + e);
            e.printStackTrace(System.out);
            try {
                if (!c.getAutoCommit()) c.rollback();
            } catch (SQLException ignored) {
            }
        }
    }

    static void ensure(boolean ok, String message) {
        if (!ok) throw new AssertionError(message);
    }

    static void equal(Object got, Object want, String what) {
        if (!Objects.equals(got, want)) throw new AssertionError(what + ": got " + got + ", want " + want);
    }

    static String env(String name, String fallback) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? fallback : v;
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + env("PGHOST", "127.0.0.1") + ":" + env("PGPORT", "5432") + "/"
                + env("PGDATABASE", "audiolake");
        Properties props = new Properties();
        props.setProperty("user", env("PGUSER", "postgres"));
        if (System.getenv("PGPASSWORD") != null) props.setProperty("password", System.getenv("PGPASSWORD"));
        props.setProperty("sslmode", env("PGSSLMODE", "disable"));
        props.setProperty("connectTimeout", "10");
        props.setProperty("socketTimeout", "120");
        props.setProperty("ApplicationName", "audiolake-jdbc-check");

        try (Connection c = DriverManager.getConnection(url, props)) {
            DatabaseMetaData md = c.getMetaData();
            System.out.println("     " + md.getDatabaseProductName() + " " + md.getDatabaseProductVersion()
                    + ", driver " + md.getDriverVersion());

            check("getTables", c, conn -> {
                boolean found = false;
                try (ResultSet rs = md.getTables(null, null, "%", new String[] {"TABLE"})) {
                    while (rs.next()) {
                        if (rs.getString("TABLE_NAME").equals("music")) {
                            found = true;
                            equal(rs.getString("TABLE_SCHEM"), "public", "music's schema");
                            equal(rs.getString("TABLE_TYPE"), "TABLE", "music's type");
                        }
                    }
                }
                ensure(found, "getTables(TABLE) does not list music");
                try (ResultSet rs = md.getTables(null, "public", "music", null)) {
                    ensure(rs.next(), "getTables(null, public, music, null) is empty");
                }
                try (ResultSet rs = md.getTableTypes()) {
                    ensure(rs.next(), "getTableTypes is empty");
                }
            });

            check("getColumns", c, conn -> {
                Map<String, Integer> types = new LinkedHashMap<>();
                Map<String, String> typeNames = new HashMap<>();
                try (ResultSet rs = md.getColumns(null, "public", "music", "%")) {
                    int last = 0;
                    while (rs.next()) {
                        int pos = rs.getInt("ORDINAL_POSITION");
                        ensure(pos == last + 1, "ORDINAL_POSITION " + pos + " after " + last);
                        last = pos;
                        types.put(rs.getString("COLUMN_NAME"), rs.getInt("DATA_TYPE"));
                        typeNames.put(rs.getString("COLUMN_NAME"), rs.getString("TYPE_NAME"));
                    }
                }
                List<String> names = new ArrayList<>(types.keySet());
                ensure(names.size() > 20, "only " + names.size() + " columns: " + names);
                equal(names.subList(0, 4), List.of("path", "file_name", "size_bytes", "last_modified"), "first columns");
                equal(names.get(names.size() - 1), "error", "last column");
                equal(types.get("path"), Types.VARCHAR, "path's type (" + typeNames.get("path") + ")");
                equal(types.get("size_bytes"), Types.BIGINT, "size_bytes's type (" + typeNames.get("size_bytes") + ")");
                equal(types.get("sample_rate"), Types.INTEGER, "sample_rate's type");
                equal(types.get("duration_s"), Types.DOUBLE, "duration_s's type (" + typeNames.get("duration_s") + ")");
                // pgJDBC reports timestamptz as Types.TIMESTAMP.
                equal(types.get("last_modified"), Types.TIMESTAMP, "last_modified's type");
                equal(typeNames.get("last_modified"), "timestamptz", "last_modified's type name");
                equal(types.get("chroma"), Types.ARRAY, "chroma's type (" + typeNames.get("chroma") + ")");
                equal(typeNames.get("chroma"), "_float4", "chroma's type name");
            });

            check("getSchemas", c, conn -> {
                Set<String> schemas = new HashSet<>();
                try (ResultSet rs = md.getSchemas()) {
                    while (rs.next()) schemas.add(rs.getString("TABLE_SCHEM"));
                }
                ensure(schemas.contains("public"), "getSchemas: " + schemas);
                ensure(schemas.contains("pg_catalog"), "getSchemas: " + schemas);
                try (ResultSet rs = md.getCatalogs()) {
                    ensure(rs.next(), "getCatalogs is empty");
                }
            });

            check("getTypeInfo", c, conn -> {
                Map<String, Integer> types = new HashMap<>();
                try (ResultSet rs = md.getTypeInfo()) {
                    while (rs.next()) types.put(rs.getString("TYPE_NAME"), rs.getInt("DATA_TYPE"));
                }
                equal(types.get("int8"), Types.BIGINT, "getTypeInfo int8");
                equal(types.get("int4"), Types.INTEGER, "getTypeInfo int4");
                equal(types.get("float8"), Types.DOUBLE, "getTypeInfo float8");
                equal(types.get("text"), Types.VARCHAR, "getTypeInfo text");
                equal(types.get("bool"), Types.BIT, "getTypeInfo bool");
            });

            check("getPrimaryKeys", c, conn -> {
                try (ResultSet rs = md.getPrimaryKeys(null, "public", "music")) {
                    if (rs.next()) throw new AssertionError("music has a primary key column " + rs.getString("COLUMN_NAME"));
                }
                try (ResultSet rs = md.getIndexInfo(null, "public", "music", false, true)) {
                    ensure(!rs.next(), "music has an index?");
                }
                try (ResultSet rs = md.getImportedKeys(null, "public", "music")) {
                    ensure(!rs.next(), "music has a foreign key?");
                }
            });

            check("statement", c, conn -> {
                try (Statement st = conn.createStatement();
                     ResultSet rs = st.executeQuery("SELECT count(*) FROM music")) {
                    ensure(rs.next(), "no row");
                    equal(rs.getLong(1), 5L, "count(*)");
                    equal(rs.getMetaData().getColumnType(1), Types.BIGINT, "count(*)'s type");
                }
            });

            check("preparedStatement", c, conn -> {
                try (PreparedStatement ps = conn.prepareStatement(
                        "SELECT file_name, sample_rate FROM music WHERE sample_rate = ? ORDER BY file_name")) {
                    // Run it more than prepareThreshold (5) times: pgJDBC then switches to a named
                    // server-side statement.
                    for (int i = 0; i < 7; i++) {
                        int rate = i % 2 == 0 ? 44100 : 22050;
                        ps.setInt(1, rate);
                        List<String> got = new ArrayList<>();
                        try (ResultSet rs = ps.executeQuery()) {
                            while (rs.next()) {
                                got.add(rs.getString(1));
                                equal(rs.getInt(2), rate, "sample_rate");
                            }
                        }
                        equal(got, rate == 44100 ? List.of("a_minor_120.mp3", "d_minor_140.ogg")
                                : List.of("g_major_100.m4a"), "files at " + rate + " Hz (run " + i + ")");
                    }
                }
                try (PreparedStatement ps = conn.prepareStatement("SELECT count(*) FROM music WHERE file_name = ?")) {
                    ps.setString(1, "broken.mp3");
                    try (ResultSet rs = ps.executeQuery()) {
                        ensure(rs.next(), "no row");
                        equal(rs.getLong(1), 1L, "count of broken.mp3");
                    }
                }
            });

            check("typedGetters", c, conn -> {
                try (PreparedStatement ps = conn.prepareStatement(
                        "SELECT file_name, size_bytes, last_modified, sample_rate, channels, duration_s, chroma, error "
                                + "FROM music ORDER BY file_name")) {
                    try (ResultSet rs = ps.executeQuery()) {
                        ResultSetMetaData m = rs.getMetaData();
                        equal(m.getColumnType(2), Types.BIGINT, "size_bytes");
                        equal(m.getColumnType(4), Types.INTEGER, "sample_rate");
                        equal(m.getColumnType(6), Types.DOUBLE, "duration_s");
                        equal(m.getColumnTypeName(3), "timestamptz", "last_modified");
                        equal(m.getColumnType(7), Types.ARRAY, "chroma");
                        List<String> files = new ArrayList<>();
                        while (rs.next()) {
                            String name = rs.getString("file_name");
                            files.add(name);
                            ensure(rs.getLong("size_bytes") > 0, name + ": size_bytes");
                            Timestamp modified = rs.getTimestamp("last_modified");
                            ensure(modified != null && modified.getTime() > 1_000_000_000_000L, name + ": last_modified " + modified);
                            java.time.OffsetDateTime odt = rs.getObject("last_modified", java.time.OffsetDateTime.class);
                            equal(odt.toInstant(), modified.toInstant(), name + ": last_modified as OffsetDateTime");
                            int rate = rs.getInt("sample_rate");
                            if (name.equals("broken.mp3")) {
                                ensure(rs.wasNull(), "broken.mp3: sample_rate is not NULL");
                                ensure(rs.getString("error") != null, "broken.mp3: no error");
                            } else {
                                ensure(rate == 22050 || rate == 44100 || rate == 48000, name + ": sample_rate " + rate);
                                double duration = rs.getDouble("duration_s");
                                ensure(Math.abs(duration - 16.0) < 0.2, name + ": duration_s " + duration);
                                ensure(rs.getString("error") == null, name + ": error " + rs.getString("error"));
                            }
                            if (name.equals("c_major_90.flac")) {
                                equal(rs.getInt("channels"), 1, "c_major_90.flac channels");
                                Array chroma = rs.getArray("chroma");
                                ensure(chroma != null, "chroma is NULL");
                                Float[] values = (Float[]) chroma.getArray();
                                equal(values.length, 12, "chroma length");
                                for (Float v : values) ensure(v != null && v >= 0 && !v.isNaN(), "chroma value " + v);
                            }
                        }
                        equal(files, FILES, "files");
                    }
                }
            });

            check("errorThenUsable", c, conn -> {
                try (Statement st = conn.createStatement()) {
                    try {
                        st.executeQuery("SELECT * FROM no_such_table");
                        throw new AssertionError("no error for an unknown table");
                    } catch (SQLException e) {
                        equal(e.getSQLState(), "42P01", "SQLSTATE (" + e.getMessage() + ")");
                    }
                    try (ResultSet rs = st.executeQuery("SELECT count(*) FROM music")) {
                        ensure(rs.next(), "no row");
                        equal(rs.getLong(1), 5L, "count after an error");
                    }
                }
                conn.setAutoCommit(false);
                try (Statement st = conn.createStatement()) {
                    try {
                        st.executeQuery("SELEC 1");
                        throw new AssertionError("no error for a syntax error");
                    } catch (SQLException e) {
                        equal(e.getSQLState(), "42601", "SQLSTATE (" + e.getMessage() + ")");
                    }
                    conn.rollback();
                    try (ResultSet rs = st.executeQuery("SELECT 1")) {
                        ensure(rs.next() && rs.getInt(1) == 1, "SELECT 1 after rollback");
                    }
                    conn.commit();
                } finally {
                    conn.setAutoCommit(true);
                }
            });

            check("fetchSize", c, conn -> {
                // A fetch size outside autocommit makes pgJDBC fetch through a portal, n rows at a time.
                conn.setAutoCommit(false);
                try (Statement st = conn.createStatement()) {
                    st.setFetchSize(2);
                    List<String> files = new ArrayList<>();
                    try (ResultSet rs = st.executeQuery("SELECT file_name FROM music ORDER BY file_name")) {
                        while (rs.next()) files.add(rs.getString(1));
                    }
                    equal(files, FILES, "files fetched 2 at a time");
                    conn.commit();
                } finally {
                    conn.setAutoCommit(true);
                }
            });
        }

        if (!failures.isEmpty()) {
            System.out.println("jdbc: " + failures.size() + " check(s) failed: " + String.join(", ", failures));
            System.exit(1);
        }
        System.out.println("jdbc: all checks passed");
    }
}
