"""The official Omniglot release, as torchvision downloads it (images_background.zip, images_evaluation.zip)
and bench/datasets.py reads it: the layout `bench.datasets` checks a copy against.

ALPHABETS[top][alphabet] = (number of characters, md5 of the alphabet's PNGs); FOLDER_MD5[top] = md5 of the
top folder's PNGs. Both md5s frame each file as `bench.datasets._folder_md5` does (path relative to the
folder, size, bytes, in sorted order of the paths). Every character has 20 drawings (drawers 01-20).
Computed from an extraction of the official zips whose counts match the published ones
(30 + 20 alphabets, 964 + 659 characters, 20 drawings each).
"""

ALPHABETS: dict[str, dict[str, tuple[int, str]]] = {
    "images_background": {
        "Alphabet_of_the_Magi": (20, "eaa6cb930f24241b6b088a8d1ea74542"),
        "Anglo-Saxon_Futhorc": (29, "d78b85822ac101f1f47372c26387802c"),
        "Arcadian": (26, "96df4174f99aa6e06d7660e911363ebe"),
        "Armenian": (41, "0a18e1b680c49693bb59fffd3bd417df"),
        "Asomtavruli_(Georgian)": (40, "7b9d21563bfdaf6316b7501b045ce317"),
        "Balinese": (24, "3d8501d687b047f8f99f333b7c467f8f"),
        "Bengali": (46, "722cee3420680a07833888502585625e"),
        "Blackfoot_(Canadian_Aboriginal_Syllabics)": (14, "d0545c3f21e80ae7885e5808b7da89ec"),
        "Braille": (26, "8d6aaa09ec6df2af5233f08619d5787d"),
        "Burmese_(Myanmar)": (34, "160063d44f494367ddd9bbe3d56692f0"),
        "Cyrillic": (33, "5d2a9025501b2fb1d69176d1dddbff4e"),
        "Early_Aramaic": (22, "c7319bb201881ad181210e2a12f2520e"),
        "Futurama": (26, "87a84de0c8c7d9f551a8e649c7a5b1c8"),
        "Grantha": (43, "fe6a5c8f854cd7441b074b8abed712a9"),
        "Greek": (24, "4b90c2b20c3a59f37d180561c0d0c164"),
        "Gujarati": (48, "4dac28be5a221b922593e037299c60dc"),
        "Hebrew": (22, "9f44ce122fe304dddd520932c1c47508"),
        "Inuktitut_(Canadian_Aboriginal_Syllabics)": (16, "cc520d3c19489b6c9459c98dd0aa8838"),
        "Japanese_(hiragana)": (52, "625d0b4d403f158391d42abb995bb91c"),
        "Japanese_(katakana)": (47, "ec0348a06016ec9cc41e2c9d56aa6a45"),
        "Korean": (40, "7f91807e1e3c3cc24d54f54fca176cb8"),
        "Latin": (26, "0709b40a21855db48f6a4c82d38225d5"),
        "Malay_(Jawi_-_Arabic)": (40, "f57902f41c36f37d67f6169759908873"),
        "Mkhedruli_(Georgian)": (41, "21c0b55244ea3ff68cd6b0ea483b6306"),
        "N_Ko": (33, "690262cffd3ff5971f83d8efd2385956"),
        "Ojibwe_(Canadian_Aboriginal_Syllabics)": (14, "074e08ade52114cc8292ec80beb5cea4"),
        "Sanskrit": (42, "2b6fdcd16283b1cfe34f231ad88c6723"),
        "Syriac_(Estrangelo)": (23, "6a988ef513d5ff74c646e3f69d22006f"),
        "Tagalog": (17, "a3da3bbcc0f8d45b9ee02397de457a83"),
        "Tifinagh": (55, "c51eca476e2859042c6c42929625633a"),
    },
    "images_evaluation": {
        "Angelic": (20, "8636235ad370cb87adfd26fe0cb83576"),
        "Atemayar_Qelisayer": (26, "dd67b09ee65fbe638e8c5e9fdd6842a4"),
        "Atlantean": (26, "58465fe7a03b5b906894d40cce40c9b2"),
        "Aurek-Besh": (26, "6909308548d774c0e667236f419bba4a"),
        "Avesta": (26, "92c44b1182288526c90a5dd7bfec2fac"),
        "Ge_ez": (26, "ae9589b21bc89d885a6aafc38af0ed8f"),
        "Glagolitic": (45, "ea7e75376ac77a206afd0d0d368b36f8"),
        "Gurmukhi": (45, "39f440f1406f82f93f963211629db4ae"),
        "Kannada": (41, "ec4ffb98c7419c2a52b969ecbc80bd37"),
        "Keble": (26, "66dc8faabff8faa814f5307dcf68b501"),
        "Malayalam": (47, "011153d55f08607125fbf392338972be"),
        "Manipuri": (40, "5c891e38c6bb82abb09b8517d3dc2f81"),
        "Mongolian": (30, "2b45c69520e095006ecd8c2f28448dcd"),
        "Old_Church_Slavonic_(Cyrillic)": (45, "83f5a0e11efc75a87b668e5168f658da"),
        "Oriya": (46, "360a4e231670b1d0f6e888b024117497"),
        "Sylheti": (28, "3639f7415ca016d48ffeb40215a98237"),
        "Syriac_(Serto)": (23, "dbe4f0ded04bc3e896cef1d515a9e7d4"),
        "Tengwar": (25, "aab604a0cb335a69b6ff50a262b9247d"),
        "Tibetan": (42, "0efab22557b8b1f552a479a5be2b88b2"),
        "ULOG": (26, "0f77a58e40a56dd22a757b3605508606"),
    },
}
FOLDER_MD5: dict[str, str] = {
    "images_background": "7ae17e58de56fb0676c6908c844dcf9b",
    "images_evaluation": "5d0ab1e67da6c07bfcf132910a519e7a",
}
