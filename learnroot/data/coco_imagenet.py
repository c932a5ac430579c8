"""COCO-80 classes and their ImageNet-1k counterparts, for explaining ImageNet models on COCO masks.

An ImageNet classifier knows no COCO class; it knows finer ones (118 dog breeds, five house
cats, three elephants ...). Each COCO class with counterparts maps to the *set* of ImageNet-1k
output indices whose typical photograph shows that object as the main subject. The explained
target of an image is then the model's top-scoring index within the set (see
:func:`learnroot.data.candidate_labels`).

Every index below is written with its class name in ``imagenet_class_index.json`` (the common
``{"0": ["n01440764", "tench"], ...}`` file; names with underscores), and the tests check each
pair against that file. Ranges are written ``(first, last, first_name, last_name)``, inclusive.

Choices
-------
* Only clear counterparts: ImageNet classes that *are* the COCO object (a Persian cat is a cat),
  not objects that merely co-occur (a car wheel or a grille is not a car).
* Approximate but kept, because the object is what the photo shows: ``stop sign`` -> street sign,
  ``book`` -> book jacket, ``potted plant`` -> pot (ImageNet's "pot, flowerpot"), ``wine glass``
  -> goblet, ``toilet`` -> toilet seat, ``hair drier`` -> hand blower, ``sink`` -> washbasin.
* Left out (ambiguous between two COCO classes): ambulance, police van (car or truck in COCO),
  water buffalo and bison (not cows), bighorn (wild sheep), tricycle and unicycle.
* COCO classes without a counterpart are unmapped: person, fire hydrant, giraffe, suitcase,
  frisbee, snowboard, kite (ImageNet's ``kite``, index 21, is a bird of prey), baseball bat,
  baseball glove, skateboard, surfboard, fork, knife, sandwich, carrot, donut, cake, oven,
  scissors, toothbrush.
* The sets are disjoint, so one ImageNet index names at most one COCO class.
"""
from __future__ import annotations

from typing import Union

#: The COCO-80 class names in the standard order (YOLO / COCO-80 index = position).
COCO80 = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)

#: One entry: ``(index, name)`` or an inclusive range ``(first, last, first_name, last_name)``.
Entry = Union[tuple[int, str], tuple[int, int, str, str]]

#: COCO class name -> its ImageNet-1k counterparts (index and ``imagenet_class_index.json`` name).
COCO_TO_IMAGENET: dict[str, tuple[Entry, ...]] = {
    "bicycle": ((444, "bicycle-built-for-two"), (671, "mountain_bike")),
    "car": ((436, "beach_wagon"), (468, "cab"), (511, "convertible"), (609, "jeep"), (627, "limousine"),
            (656, "minivan"), (661, "Model_T"), (751, "racer"), (817, "sports_car")),
    "motorcycle": ((665, "moped"), (670, "motor_scooter")),
    "airplane": ((404, "airliner"), (895, "warplane")),
    "bus": ((654, "minibus"), (779, "school_bus"), (874, "trolleybus")),
    "train": ((466, "bullet_train"), (547, "electric_locomotive"), (565, "freight_car"), (705, "passenger_car"),
              (820, "steam_locomotive"), (829, "streetcar")),
    "truck": ((555, "fire_engine"), (569, "garbage_truck"), (675, "moving_van"), (717, "pickup"),
              (864, "tow_truck"), (867, "trailer_truck")),
    "boat": ((403, "aircraft_carrier"), (472, "canoe"), (484, "catamaran"), (510, "container_ship"),
             (554, "fireboat"), (576, "gondola"), (625, "lifeboat"), (628, "liner"), (724, "pirate"),
             (780, "schooner"), (814, "speedboat"), (833, "submarine"), (871, "trimaran"), (914, "yawl")),
    "traffic light": ((920, "traffic_light"),),
    "stop sign": ((919, "street_sign"),),
    "parking meter": ((704, "parking_meter"),),
    "bench": ((703, "park_bench"),),
    # every ImageNet bird: game birds to owls, grouse to swans, storks to albatrosses
    "bird": ((7, 24, "cock", "great_grey_owl"), (80, 100, "black_grouse", "black_swan"),
             (127, 146, "white_stork", "albatross")),
    "cat": ((281, 285, "tabby", "Egyptian_cat"),),  # domestic cats only (286 cougar on are wild cats)
    "dog": ((151, 268, "Chihuahua", "Mexican_hairless"),),  # the 118 breeds (269 timber_wolf on are wild)
    "horse": ((339, "sorrel"),),
    "sheep": ((348, "ram"),),
    "cow": ((345, "ox"),),
    "elephant": ((101, "tusker"), (385, "Indian_elephant"), (386, "African_elephant")),
    "bear": ((294, 297, "brown_bear", "sloth_bear"),),
    "zebra": ((340, "zebra"),),
    "backpack": ((414, "backpack"),),
    "umbrella": ((879, "umbrella"),),
    "handbag": ((748, "purse"),),
    "tie": ((457, "bow_tie"), (906, "Windsor_tie")),
    "skis": ((795, "ski"),),
    "sports ball": ((429, "baseball"), (430, "basketball"), (574, "golf_ball"), (722, "ping-pong_ball"),
                    (768, "rugby_ball"), (805, "soccer_ball"), (852, "tennis_ball"), (890, "volleyball")),
    "tennis racket": ((752, "racket"),),
    "bottle": ((440, "beer_bottle"), (720, "pill_bottle"), (737, "pop_bottle"), (898, "water_bottle"),
               (907, "wine_bottle")),
    "wine glass": ((572, "goblet"),),
    "cup": ((441, "beer_glass"), (504, "coffee_mug"), (647, "measuring_cup"), (968, "cup")),  # COCO: any drinking vessel
    "spoon": ((910, "wooden_spoon"),),
    "bowl": ((659, "mixing_bowl"), (809, "soup_bowl")),
    "banana": ((954, "banana"),),
    "apple": ((948, "Granny_Smith"),),
    "orange": ((950, "orange"),),
    "broccoli": ((937, "broccoli"),),
    "hot dog": ((934, "hotdog"),),
    "pizza": ((963, "pizza"),),
    "chair": ((423, "barber_chair"), (559, "folding_chair"), (765, "rocking_chair"), (857, "throne")),
    "couch": ((831, "studio_couch"),),
    "potted plant": ((738, "pot"),),
    "bed": ((564, "four-poster"),),
    "dining table": ((532, "dining_table"),),
    "toilet": ((861, "toilet_seat"),),
    "tv": ((664, "monitor"), (782, "screen"), (851, "television")),  # COCO's tv includes computer monitors
    "laptop": ((620, "laptop"), (681, "notebook")),
    "mouse": ((673, "mouse"),),
    "remote": ((761, "remote_control"),),
    "keyboard": ((508, "computer_keyboard"),),
    "cell phone": ((487, "cellular_telephone"),),
    "microwave": ((651, "microwave"),),
    "toaster": ((859, "toaster"),),
    "sink": ((896, "washbasin"),),
    "refrigerator": ((760, "refrigerator"),),
    "book": ((921, "book_jacket"),),
    "clock": ((409, "analog_clock"), (530, "digital_clock"), (892, "wall_clock")),
    "vase": ((883, "vase"),),
    "teddy bear": ((850, "teddy"),),
    "hair drier": ((589, "hand_blower"),),
}


def imagenet_indices(coco_class: str) -> tuple[int, ...]:
    """The sorted ImageNet-1k output indices of a COCO class (empty when it has no counterpart).

    Parameters
    ----------
    coco_class : str
        A name of :data:`COCO80`.
    """
    indices = []
    for entry in COCO_TO_IMAGENET.get(coco_class, ()):
        indices += [entry[0]] if len(entry) == 2 else list(range(entry[0], entry[1] + 1))
    return tuple(sorted(indices))


#: COCO-80 index -> sorted ImageNet indices, for the mapped classes only.
COCO_INDEX_TO_IMAGENET: dict[int, tuple[int, ...]] = {
    index: imagenet_indices(name) for index, name in enumerate(COCO80) if name in COCO_TO_IMAGENET
}
