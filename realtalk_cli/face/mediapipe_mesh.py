"""Named parts of MediaPipe FaceMesh's 478-landmark topology (468 mesh points + 10 iris points).

Rings are ordered (each consecutive pair, and last->first, is an edge of mediapipe's own
FACEMESH_LIPS / FACEMESH_FACE_OVAL connection sets; a test checks this). Image left is the
subject's right.
"""

N_LANDMARKS = 478

LIPS_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146]
LIPS_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95]
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
# jaw: the oval from ear level on the image left (234), down round the chin (152), to the right (454)
JAW = [234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454]
# mask contour: the jaw from cheek to cheek at nose level (93 .. 323); the polygon closes across the
# face just under the eyes, so a filled mask covers nose tip, mouth, cheeks and chin.
MASK_CONTOUR = JAW[1:-1]
# facing upper/lower inner-lip points, used for mouth opening
OPENING_PAIRS = [(81, 178), (13, 14), (311, 402)]
NOSE_BOTTOM = 2  # subnasale: the mouth region is everything below it
NOSE_TIP = 1
RIGHT_EYE = [33, 133, 159, 145]  # subject's right eye (image left): corners, upper, lower lid
LEFT_EYE = [263, 362, 386, 374]
MOUTH_CORNERS = [61, 291]
CHIN = 152
# rigid points for head pose: the upper face oval, eye corners and the nose bridge; the jaw, lips and
# cheeks move with speech and would leak mouth opening into the pose
POSE_POINTS = [234, 127, 162, 21, 54, 103, 67, 109, 10, 338, 297, 332, 284, 251, 389, 356, 454,
               33, 133, 362, 263, 6, 168, 197, 195, 5, 4, 1]
