-- semcache schema 2: the exact-key material of entries stored by request.
-- An entry's key_hash is SHA-256 over (kind, namespace, material); keeping the material
-- lets an import derive the key again for the namespace it imports into, instead of
-- trusting a finished hash from the file (a hash could point at another tenant's key).
-- NULL for plain prompts (their material is the prompt) and for vectors.
ALTER TABLE entries ADD COLUMN key_material BLOB;
