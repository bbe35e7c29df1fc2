-- A school database in the style of Dapodik (fictitious data). Runs on SQLite and
-- PostgreSQL alike.
CREATE TABLE sekolah (
    npsn TEXT PRIMARY KEY,
    nama TEXT NOT NULL,
    kabupaten TEXT NOT NULL
);

CREATE TABLE siswa (
    nisn TEXT PRIMARY KEY,
    nik TEXT NOT NULL UNIQUE,
    nama TEXT NOT NULL,
    npsn TEXT NOT NULL REFERENCES sekolah (npsn),
    tingkat INTEGER NOT NULL CHECK (tingkat BETWEEN 1 AND 12),
    aktif BOOLEAN NOT NULL
);

INSERT INTO sekolah (npsn, nama, kabupaten) VALUES
    ('20100001', 'SD Negeri Duren Sawit 03', 'Kota Jakarta Timur'),
    ('20100002', 'SMP Negeri 109 Jakarta', 'Kota Jakarta Timur'),
    ('20200003', 'SMA Negeri 3 Bandung', 'Kota Bandung');

INSERT INTO siswa (nisn, nik, nama, npsn, tingkat, aktif) VALUES
    ('0121234567', '3174014107120003', 'Dewi Rahayu', '20100002', 8, TRUE),
    ('0131234568', '3174011505150005', 'Rina Wulandari', '20100001', 4, TRUE),
    ('0111234569', '3174010208100006', 'Andi Pratama', '20100002', 9, FALSE),
    ('0081234570', '3273012003080007', 'Bayu Santoso', '20200003', 11, TRUE);
