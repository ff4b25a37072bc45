-- semcache schema 6: the file's incarnation token.
-- A random value drawn once, when the file becomes a cache (or reaches this schema). A
-- process remembers ids read from the file (partition ids; decoded responses by entry
-- id): they mean something only in the incarnation they were read from. A file replaced
-- under a live process by another cache (`sqlite3 llm.db ".restore other.db"`) has another
-- token, and a process that sees the token change drops every memo before using one.
INSERT INTO settings (name, value) VALUES ('incarnation', lower(hex(randomblob(16))))
    ON CONFLICT (name) DO NOTHING;
